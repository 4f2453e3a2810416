"""Hugging Face Decision Transformers in and out: transformers' own DecisionTransformerModel and this project's
model give the same actions, both ways."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from dtrepro.agent.hub import read_hub_folder, write_hub_folder
from dtrepro.agent.model import DecisionTransformer
from dtrepro.runtime.errors import DtreproError

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
