"""Hugging Face Decision Transformers in and out: transformers' own DecisionTransformerModel and this project's
model give the same actions, both ways."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch

from dtrepro.agent.envs import make_env
from dtrepro.agent.hub import read_hub_folder, write_hub_folder
from dtrepro.agent.model import DecisionTransformer
from dtrepro.data.d4rl import read_d4rl
from dtrepro.evaluation.imported import evaluate_hub_folders
from dtrepro.params import EvalParams, HubParams
from dtrepro.runtime.errors import DtreproError

from helpers import HOPPER, params

transformers = pytest.importorskip("transformers")  # the `hf` extra; requirements-dev.lock installs it
K, STATE, ACT = 6, 11, 3


def hub_model(**config) -> transformers.DecisionTransformerModel:
    """A small DecisionTransformerModel with random weights (its position embedding too: it must fold)."""
    torch.manual_seed(0)
    settings = dict(state_dim=STATE, act_dim=ACT, hidden_size=32, n_layer=2, n_head=2, max_ep_len=1000)
    model = transformers.DecisionTransformerModel(transformers.DecisionTransformerConfig(**settings, **config))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # layer norms and biases away from 1 and 0
    return model.eval()


def window(padded: int, k: int = K):
    """A batch of 3 windows of k steps, the first `padded` steps of each left-padded."""
    gen = torch.Generator().manual_seed(1)
    states, actions = torch.randn(3, k, STATE, generator=gen), torch.rand(3, k, ACT, generator=gen) * 2 - 1
    rtg, timesteps = torch.randn(3, k, generator=gen), torch.randint(0, 990, (3, 1)) + torch.arange(k)
    mask = torch.arange(k).expand(3, k) >= padded
    return states, actions, rtg, timesteps, mask


def theirs(model, states, actions, rtg, timesteps, mask):
    with torch.no_grad():
        out = model(
            states=states,
            actions=actions,
            rewards=torch.zeros(*rtg.shape, 1),
            returns_to_go=rtg.unsqueeze(-1),
            timesteps=timesteps,
            attention_mask=mask.long(),
        )
    return out.action_preds


@pytest.mark.parametrize("activation", ["relu", "gelu_new"])
@pytest.mark.parametrize("padded", [0, 4])
def test_an_imported_model_acts_as_transformers_own(tmp_path, activation, padded):
    hub = hub_model(activation_function=activation)
    hub.save_pretrained(tmp_path / "hub")
    cfg, weights = read_hub_folder(tmp_path / "hub", context_len=K)
    ours = DecisionTransformer(cfg)
    ours.load_state_dict(weights)
    x = window(padded)
    with torch.no_grad():
        mine = ours.eval()(*x)
        last = ours.final_action(*x)
    real = x[4]
    assert torch.allclose(mine[real], theirs(hub, *x)[real], atol=1e-5)
    assert torch.allclose(last, theirs(hub, *x)[:, -1], atol=1e-5)


def test_an_exported_model_loads_in_transformers_and_acts_the_same(tmp_path):
    hub = hub_model()
    hub.save_pretrained(tmp_path / "hub")
    cfg, weights = read_hub_folder(tmp_path / "hub", context_len=K)
    write_hub_folder(cfg, weights, tmp_path / "out", "# card\n")
    again = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "out").eval()
    for padded in (0, 2):
        x = window(padded)
        assert torch.allclose(theirs(again, *x)[x[4]], theirs(hub, *x)[x[4]], atol=1e-5)
    assert (tmp_path / "out" / "README.md").read_text() == "# card\n"


def test_what_does_not_map_is_refused_in_one_paragraph(tmp_path):
    hub_model(action_tanh=False).save_pretrained(tmp_path / "hub")
    with pytest.raises(DtreproError, match="is not a Decision Transformer this project's model can be"):
        read_hub_folder(tmp_path / "hub", context_len=K)
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(DtreproError, match="model_type 'gpt2'"):
        read_hub_folder(tmp_path / "gpt2", context_len=K)


def play_theirs(model, env_id, seed, target, stats, hf, max_steps) -> tuple[float, int]:
    """One episode driven by transformers' model itself, as its Decision Transformer example acts: the last K steps
    left-padded with zeros, the attention mask over the padding, the last of `action_preds` taken."""
    env, k = make_env(env_id, max_steps), hf.context_len
    obs, _ = env.reset(seed=seed)
    mean, std = (torch.as_tensor(np.asarray(x, np.float32)) for x in stats)
    states = ((torch.as_tensor(obs, dtype=torch.float32) - mean) / std)[None]
    actions, rtg = torch.zeros(0, 3), torch.tensor([target / hf.return_scale])
    total, t = 0.0, 0
    while True:
        n = min(len(states), k)
        pad = k - n
        acts = torch.cat([actions, torch.zeros(1, 3)])  # the action of this step not known yet: zeros, as theirs
        last = [torch.cat([torch.zeros(pad, *x.shape[1:]), x[-n:]])[None] for x in (states, acts, rtg)]
        stepped = torch.cat([torch.zeros(pad, dtype=torch.long), torch.arange(t - n + 1, t + 1)])[None]
        mask = torch.cat([torch.zeros(pad), torch.ones(n)])[None].bool()
        x = (*last, stepped, mask)
        action = theirs(model, *x)[0, -1]
        obs, reward, terminated, truncated, _ = env.step(action.numpy())
        total, t = total + reward, t + 1
        if terminated or truncated:
            return total, t
        actions = torch.cat([actions, action[None]])
        states = torch.cat([states, ((torch.as_tensor(obs, dtype=torch.float32) - mean) / std)[None]])
        rtg = torch.cat([rtg, rtg[-1:] - reward / hf.return_scale])


def test_an_imported_model_is_scored_episode_for_episode_as_transformers_own_model_plays(tmp_path, hopper_file):
    """The hub stage's scoring of a Hub folder (here on the data's own state statistics) equals driving
    transformers' DecisionTransformerModel directly: every episode's return and length."""
    hub = hub_model()
    hub.save_pretrained(tmp_path / "hub" / "tiny")
    chosen = dict(episodes=2, targets=[3600.0, 400.0], max_steps=120, amp=False, bootstrap_resamples=200)
    run = params(eval=chosen, hf={"models": ["hub/tiny"], "context_len": K})
    evaluation, hf = EvalParams.from_params(run, HOPPER), HubParams.from_params(run)
    folders = [str(tmp_path / "hub" / "tiny")]
    csv_path, metrics_path = tmp_path / "hub.csv", tmp_path / "hub.json"
    metrics = evaluate_hub_folders(folders, evaluation, hf, hopper_file, metrics_path, csv_path, dataset=HOPPER)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and json.loads(metrics_path.read_text()) == metrics
    obs = read_d4rl(hopper_file).arrays["observations"].astype(np.float64)
    stats = (obs.mean(axis=0), obs.std(axis=0) + 1e-6)
    for row in rows:
        target, seed = float(row["target"]), int(row["seed"])
        ret, length = play_theirs(hub, "Hopper-v4", seed, target, stats, hf, evaluation.max_steps)
        assert int(row["length"]) == length and float(row["return"]) == pytest.approx(ret, rel=1e-4)
    mean = np.mean([float(r["normalized_score"]) for r in rows if float(r["target"]) == 400.0])
    assert metrics[f"{folders[0]}.target_400.normalized_score_mean"] == pytest.approx(mean)


def test_hub_models_must_be_folders_of_hub_and_their_statistics_go_together():
    for bad in (["/abs/model"], ["models/x"], ["hub/../x"]):
        with pytest.raises(DtreproError, match="a model must be a folder inside hub/"):
            HubParams.from_params(params(hf={"models": bad}))
    with pytest.raises(DtreproError, match="state_mean and state_std go together"):
        HubParams.from_params(params(hf={"state_mean": [0.0, 1.0]}))


@pytest.mark.slow
def test_a_trained_smoke_model_exported_loads_in_transformers_and_back(copy_done, tmp_path):
    """`dtrepro export-hf` on the smoke run's model: transformers' from_pretrained acts as our policy's model does,
    the card carries the data's hash and the evaluation's scores, and reading the folder back gives the weights."""
    from dtrepro.agent.checkpoint import Checkpoint
    from dtrepro.agent.model import ModelConfig

    from helpers import COLLECTED, run

    folder = copy_done / "models" / COLLECTED / "k5-seed0"
    proc = run(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "export-hf", str(folder), str(tmp_path / "hf")], copy_done
    )
    assert proc.returncode == 0, proc.stderr
    ckpt = Checkpoint.load(folder / "last.pt")
    ours = DecisionTransformer(ModelConfig(**ckpt.config))
    ours.load_state_dict(ckpt.model)
    hub = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "hf").eval()
    for padded in (0, 3):
        x = window(padded, k=5)
        with torch.no_grad():
            assert torch.allclose(ours.eval()(*x)[x[4]], theirs(hub, *x)[x[4]], atol=1e-5)
    source = json.loads((copy_done / "reports" / "source" / f"{COLLECTED}.json").read_text())
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and source["sha256"] in card
    assert "| `last.pt` (this one) | 3600 |" in card and "dvc repro evaluate@" in card
    cfg, weights = read_hub_folder(tmp_path / "hf", context_len=5)
    assert cfg == ModelConfig(**ckpt.config)
    assert all(torch.equal(weights[k], ckpt.model[k]) for k in ckpt.model)


@pytest.mark.slow
def test_a_hub_folder_named_in_hf_models_gets_its_table_in_the_report_and_retrains_nothing(copy_done):
    """`dtrepro run smoke -S hf.models=[hub/tiny]`: only the hub stage, the report and the page run; the report's
    table and ablations.json hold the hub stage's numbers, the mean of its episode rows."""
    from helpers import COLLECTED, run, stages_ran

    hub_model().save_pretrained(copy_done / "hub" / "tiny")
    for cmd in (["git", "add", "hub"], ["git", "commit", "-qm", "a Hub model"]):
        assert run(cmd, copy_done).returncode == 0
    sets = ["-S", "hf.models=[hub/tiny]", "-S", f"hf.context_len={K}"]
    proc = run([sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", *sets], copy_done, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stages_ran(proc.stdout) == {"study", f"hub@{COLLECTED}", "report", "page"}
    with open(copy_done / "reports" / "hub" / f"{COLLECTED}.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["target"] == "3600.0"]
    assert len(rows) == 3 and {r["checkpoint"] for r in rows} == {"hub/tiny"}
    mean = np.mean([float(r["normalized_score"]) for r in rows])
    metrics = json.loads((copy_done / "results" / "ablations.json").read_text())
    assert metrics[f"{COLLECTED}.hub.hub/tiny.target_3600.normalized_score_mean"] == pytest.approx(mean)
    table = (copy_done / "results" / "ablations.md").read_text().split("### Hugging Face checkpoints")[1]
    assert f"| `hub/tiny` | {K} | 3600 |" in table and f"| {mean:.1f} |" in table
    assert "hub/tiny" in (copy_done / "results" / "index.html").read_text()
