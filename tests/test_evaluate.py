"""Evaluation: scores, confidence intervals, batched = one-by-one episodes, the stage's metrics and errors."""

from __future__ import annotations

import csv
import hashlib
import json
import sys

import numpy as np
import pytest
import torch
import yaml

from dtrepro.agent.checkpoint import Checkpoint
from dtrepro.agent.envbatch import EnvBatch
from dtrepro.agent.envs import make_env
from dtrepro.agent.episodes import run_episodes
from dtrepro.agent.model import DecisionTransformer, ModelConfig
from dtrepro.agent.policy import Policy, policy_from_checkpoint
from dtrepro.evaluation.evaluate import evaluate_checkpoints
from dtrepro.evaluation.results import EPISODE_FIELDS
from dtrepro.evaluation.stats import bootstrap_ci
from dtrepro.params import EvalParams
from dtrepro.registry.scores import normalized_score, reference_scores, return_for_score
from dtrepro.runtime.errors import DtreproError

from helpers import HOPPER, ROOT, params, run
from support.reference import run_episodes_one_by_one

RECORD_FIELDS = {
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "normalized_score_mean",
    "normalized_score_std",
    "normalized_score_ci95_low",
    "normalized_score_ci95_high",
    "length_mean",
    "episodes",
}


def test_normalized_score_against_hand_worked_values():
    # Hopper: 100 * (R + 20.272305) / (3234.3 + 20.272305), D4RL's constants
    assert normalized_score(-20.272305, "Hopper-v4") == pytest.approx(0.0, abs=1e-12)
    assert normalized_score(3234.3, "Hopper-v5") == pytest.approx(100.0)
    assert normalized_score(1607.0138475, "hopper-medium-v2") == pytest.approx(50.0)
    assert normalized_score(1000.0, "Hopper-v4") == pytest.approx(31.3489, abs=1e-4)  # 1020.272305 / 3254.572305
    assert return_for_score(50.0, "Hopper-v4") == pytest.approx(1607.0138475)
    assert normalized_score(1000.0, "HalfCheetah-v4") == pytest.approx(100 * 1280.178953 / 12415.178953)
    with pytest.raises(TypeError):  # an env forgotten is an error, never Hopper's constants
        normalized_score(1000.0)
    with pytest.raises(DtreproError, match="'Ant-v4' names no env the pipeline knows"):
        normalized_score(1.0, "Ant-v4")


def test_bootstrap_ci_against_hand_worked_values():
    # mean of a resample of [0, 100]: 0, 50, 100 with p = 1/4, 1/2, 1/4 -> the 2.5% and 97.5% points are 0 and 100
    assert bootstrap_ci([np.array([0.0, 100.0])], 10_000, seed=0) == (0.0, 100.0)
    # [0, 0, 0, 100]: the mean is 25 * Binomial(4, 1/4); P(0) = 0.32 > 2.5%, P(>= 75) = 0.051 > 2.5% > P(100)
    assert bootstrap_ci([np.array([0.0, 0.0, 0.0, 100.0])], 10_000, seed=0) == (0.0, 75.0)
    # two seeds, resampled separately: ([0,0,0,100] mean + 50) / 2 spans 25 ... 62.5
    assert bootstrap_ci([np.array([0.0, 0.0, 0.0, 100.0]), np.array([50.0, 50.0])], 10_000, seed=0) == (25.0, 62.5)
    assert bootstrap_ci([np.full(5, 7.0)], 100, seed=0) == (7.0, 7.0)
    # large normal sample: close to mean +- 1.96 sigma / sqrt(n)
    x = np.random.default_rng(0).normal(10.0, 2.0, 400)
    low, high = bootstrap_ci([x], 10_000, seed=1)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.03) and high == pytest.approx(x.mean() + half, abs=0.03)


def toy_policy(context_len: int, state_dim: int = 11, amp=None) -> Policy:
    """An untrained model with strong state weights: episodes of different lengths, actions that matter."""
    torch.manual_seed(context_len)
    cfg = ModelConfig(
        state_dim=state_dim, act_dim=3, embed_dim=32, layers=2, heads=2, context_len=context_len, dropout=0.1
    )
    model = DecisionTransformer(cfg)
    with torch.no_grad():
        model.embed_state.weight.mul_(50)
    return Policy(model, np.zeros(state_dim), np.ones(state_dim), 1000.0, amp)


@pytest.mark.parametrize("context_len, amp", [(20, None), (5, None), (1, None), (20, torch.bfloat16)])
def test_batched_evaluation_gives_exactly_the_one_by_one_returns(context_len, amp):
    policy = toy_policy(context_len, amp=amp)
    seeds, targets = list(range(100, 108)), [3600.0] * 4 + [400.0] * 4
    together = run_episodes(policy, "Hopper-v4", seeds, targets)
    alone = run_episodes_one_by_one(policy, "Hopper-v4", seeds, targets)
    assert len(set(together.lengths)) > 1  # episodes leave the batch at different steps
    np.testing.assert_array_equal(together.returns, alone.returns)
    np.testing.assert_array_equal(together.lengths, alone.lengths)
    again = run_episodes(policy, "Hopper-v4", seeds, targets, threads=3)  # the envs stepped on 3 threads
    np.testing.assert_array_equal(together.returns, again.returns)
    other = run_episodes(policy, "Hopper-v4", [s + 50 for s in seeds], targets)
    assert not np.array_equal(together.returns, other.returns)


def test_env_batch_steps_each_env_as_if_alone_on_any_number_of_threads():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (60, 5, 3))
    which = np.array([0, 2, 3, 4])  # env 1 sits out: it must not move
    runs = []
    for threads in (1, 2, 3):
        with EnvBatch("Hopper-v4", 5, 1000, threads) as envs:
            assert envs.threads == threads
            first = envs.reset(range(10, 15))
            steps = [envs.step(which, actions[t, which]) for t in range(60)]
            np.testing.assert_array_equal(envs.envs[1].unwrapped.data.qpos[1:], first[1][:5])  # env 1 has not moved
            runs.append((first, steps))
    alone = make_env("Hopper-v4", 1000)
    for row, e in enumerate(which):
        obs = alone.reset(seed=10 + int(e))[0]
        np.testing.assert_array_equal(runs[0][0][e], obs)
        for t in range(60):
            obs, reward, terminated, truncated, _ = alone.step(actions[t, e])
            got = runs[0][1][t]
            assert (
                np.array_equal(got[0][row], obs) and got[1][row] == reward and got[2][row] == (terminated or truncated)
            )
    for first, steps in runs[1:]:
        np.testing.assert_array_equal(first, runs[0][0])
        for got, want in zip(steps, runs[0][1], strict=True):
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)


def test_the_time_limit_truncates_every_episode():
    result = run_episodes(toy_policy(5), "Hopper-v4", [0, 1, 2], 3600.0, max_steps=7)
    assert result.lengths.tolist() == [7, 7, 7]


def test_mismatched_state_dimension_is_a_clear_error():
    with pytest.raises(DtreproError, match="5-dim states .* Hopper-v4 has 11-dim observations"):
        run_episodes(toy_policy(5, state_dim=5), "Hopper-v4", [0], 3600.0)


def write_checkpoint(path, policy: Policy, step: int, train_seed: int = 0, ref_scores: dict | None = None):
    """Through the one checkpoint format the train stage writes (`Checkpoint`)."""
    Checkpoint(
        model=policy.model.state_dict(),
        config=policy.model.cfg.to_dict(),
        state_mean=torch.as_tensor(policy.state_mean, dtype=torch.float32),
        state_std=torch.as_tensor(policy.state_std, dtype=torch.float32),
        return_scale=policy.return_scale,
        step=step,
        env_id="Hopper-v4",
        ref_scores=ref_scores or {},
        train_seed=train_seed,
    ).save(path)


@pytest.fixture
def checkpoints(tmp_path):
    folder = tmp_path / "models" / "k5-seed0"
    write_checkpoint(folder / "last.pt", toy_policy(5), step=40)
    best = toy_policy(5)
    with torch.no_grad():
        best.model.predict_action[0].bias.add_(0.3)  # other weights: other episodes
    write_checkpoint(folder / "best.pt", best, step=20)
    return folder


def test_metrics_schema_is_stable_and_matches_the_episode_rows(checkpoints, tmp_path):
    chosen = eval_params(episodes=3, targets=[3600.0, 400.0], max_steps=300, bootstrap_resamples=500)
    metrics = evaluate_checkpoints(
        checkpoints, chosen, tmp_path / "m.json", tmp_path / "e.csv", progress=False, dataset=HOPPER
    )
    assert json.loads((tmp_path / "m.json").read_text()) == metrics
    expected = {"env_id", "episodes", "seed", "context_len", "train_seed", "last.step", "best.step"}
    expected |= {"ref_min_score", "ref_max_score", "ref_scores_source"}  # what the scores were normalised with
    expected |= {f"{c}.{k}" for c in ("last", "best") for k in ("path", "md5")}  # the checkpoint each scored
    expected |= {f"{c}.target_{t}.{f}" for c in ("last", "best") for t in (3600, 400) for f in RECORD_FIELDS}
    assert set(metrics) == expected
    assert metrics["env_id"] == "Hopper-v4" and metrics["last.step"] == 40 and metrics["best.step"] == 20
    assert (metrics["ref_min_score"], metrics["ref_max_score"], metrics["ref_scores_source"]) == (
        -20.272305,
        3234.3,
        "d4rl",
    )
    with open(tmp_path / "e.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(EPISODE_FIELDS)
    assert {r["checkpoint_md5"] for r in rows if r["checkpoint"] == "best"} == {metrics["best.md5"]}
    assert metrics["best.md5"] == hashlib.md5((checkpoints / "best.pt").read_bytes()).hexdigest() != metrics["last.md5"]
    assert len(rows) == 2 * 2 * 3
    for ckpt in ("last", "best"):
        mine = [r for r in rows if r["checkpoint"] == ckpt and float(r["target"]) == 400.0]
        assert [int(r["seed"]) for r in mine] == [1000, 1001, 1002]
        returns = [float(r["return"]) for r in mine]
        assert metrics[f"{ckpt}.target_400.return_mean"] == pytest.approx(np.mean(returns))
        low, high = (
            metrics[f"{ckpt}.target_400.normalized_score_ci95_low"],
            metrics[f"{ckpt}.target_400.normalized_score_ci95_high"],
        )
        assert low <= metrics[f"{ckpt}.target_400.normalized_score_mean"] <= high
    assert metrics["last.target_3600.return_mean"] != metrics["best.target_3600.return_mean"]


def test_hopper_v5_by_param(checkpoints, tmp_path):
    """The episodes are v5's: v5 gives no alive bonus on the falling step, so each episode that falls returns one
    point less than v4's of the same seed (an env_id param that was only echoed would give v4's returns)."""
    returns = {}
    for env in ("Hopper-v4", "Hopper-v5"):
        chosen = eval_params(env_id=env, episodes=2, targets=[3600.0], max_steps=200, bootstrap_resamples=100)
        metrics = evaluate_checkpoints(
            checkpoints, chosen, tmp_path / "m.json", tmp_path / "e.csv", progress=False, dataset=HOPPER
        )
        assert metrics["env_id"] == env and metrics["last.target_3600.episodes"] == 2
        with open(tmp_path / "e.csv") as f:
            returns[env] = [(float(r["return"]), int(r["length"])) for r in csv.DictReader(f)]
    for (v4, n4), (v5, n5) in zip(returns["Hopper-v4"], returns["Hopper-v5"], strict=True):
        assert n4 == n5 < 200 and v5 == pytest.approx(v4 - 1.0), returns  # each fell before the time limit


def test_stage_refuses_a_checkpoint_for_another_env(tmp_path):
    folder = tmp_path / "ckpt"
    for name in ("last", "best"):
        write_checkpoint(folder / f"{name}.pt", toy_policy(5, state_dim=17), step=10)
    out = tmp_path / "out.json"
    proc = run(
        [
            sys.executable,
            str(ROOT / "stages/evaluate.py"),
            "--params",
            str(ROOT / "params.yaml"),
            "--dataset",
            HOPPER,
            "--checkpoints",
            str(folder),
            "--metrics",
            str(out),
            "--episodes-csv",
            str(tmp_path / "e.csv"),
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "17-dim states" in proc.stderr and "eval.env_id" in proc.stderr
    assert not out.exists() and not (tmp_path / "e.csv").exists()


def eval_params(**values) -> EvalParams:
    return EvalParams.from_params(params(eval=values), HOPPER)


@pytest.mark.parametrize(
    "content, message",
    [
        (torch.zeros(3), "it holds a Tensor, where a checkpoint holds model, config"),
        ([1, 2, 3], "it holds a list"),
        ({"model": {}, "step": 1}, "it holds a dict without ['config', 'state_mean'"),
        ("wrong sizes", "does not fit its own model config"),
    ],
    ids=["bare-tensor", "list", "no-config", "wrong-sizes"],
)
def test_the_stage_refuses_a_file_that_loads_but_is_not_a_checkpoint(tmp_path, content, message):
    """Files torch loads with weights_only but of another structure were a KeyError or a size-mismatch traceback;
    the stage (run once, for the last case) says so in one paragraph, exit 2, and writes nothing."""
    folder = tmp_path / "ckpt"
    for name in ("last", "best"):
        write_checkpoint(folder / f"{name}.pt", toy_policy(5), step=10)
    if content == "wrong sizes":
        content = torch.load(folder / "last.pt", weights_only=True)
        content["config"]["embed_dim"] *= 2  # the weights are the smaller network's
    torch.save(content, folder / "last.pt")
    with pytest.raises(DtreproError) as err:
        policy_from_checkpoint(folder / "last.pt")
    assert message in " ".join(str(err.value).split())
    if isinstance(content, dict) and "config" in content:
        params_path = tmp_path / "params.yaml"
        params_path.write_text(yaml.safe_dump(params(eval={"episodes": 1, "targets": [3600.0], "max_steps": 10})))
        cmd = [sys.executable, "stages/evaluate.py", "--params", str(params_path), "--dataset", HOPPER]
        cmd += ["--checkpoints", str(folder), "--episodes-csv", str(tmp_path / "e.csv")]
        proc = run(cmd + ["--metrics", str(tmp_path / "m.json")], ROOT)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert message in " ".join(proc.stderr.split())
        assert not (tmp_path / "e.csv").exists() and not (tmp_path / "m.json").exists()


FORGED_REFS = {"ref_min_score": 0.0, "ref_max_score": 100.0, "ref_scores_source": "minari"}


def test_a_d4rl_dataset_is_normalised_with_d4rls_references_whatever_its_data_say(tmp_path):
    """Reference scores carried by a file (and so by its checkpoints) cannot change what D4RL-normalised means."""
    folder = tmp_path / "k5-seed0"
    for name in ("last", "best"):
        write_checkpoint(folder / f"{name}.pt", toy_policy(5), step=40, ref_scores=FORGED_REFS)
    chosen = eval_params(episodes=2, targets=[3600.0], max_steps=50, bootstrap_resamples=100)
    metrics = evaluate_checkpoints(
        folder, chosen, tmp_path / "m.json", tmp_path / "e.csv", progress=False, dataset=HOPPER
    )
    assert (metrics["ref_min_score"], metrics["ref_max_score"], metrics["ref_scores_source"]) == (
        -20.272305,
        3234.3,
        "d4rl",
    )
    returns = metrics["last.target_3600.return_mean"]
    assert metrics["last.target_3600.normalized_score_mean"] == pytest.approx(float(normalized_score(returns, HOPPER)))


def test_a_minari_dataset_uses_its_own_references_only_where_they_normalise():
    minari_id = "mujoco/hopper/medium-v0"
    assert reference_scores(FORGED_REFS, minari_id) == (0.0, 100.0, "minari")
    assert reference_scores({}, minari_id) == (-20.272305, 3234.3, "d4rl")
    assert reference_scores({**FORGED_REFS, "ref_scores_source": "d4rl"}, minari_id)[2] == "d4rl"
    for bad in ({"ref_max_score": 0.0}, {"ref_max_score": float("nan")}, {"ref_scores_source": "<script>"}):
        with pytest.raises(DtreproError, match=f"The data of {minari_id} carry reference scores that cannot normalise"):
            reference_scores({**FORGED_REFS, **bad}, minari_id)


def test_a_checkpoint_of_another_env_family_is_refused(checkpoints, tmp_path):
    """A Hopper model scored as a Walker2d one (Walker2d's and HalfCheetah's widths are equal: widths cannot tell)."""
    walker = "walker2d-medium-v2"
    chosen = EvalParams.from_params(params(eval={"episodes": 1, "max_steps": 10}), walker)
    with pytest.raises(DtreproError, match="last.pt was trained for Hopper-v4, but the evaluation runs Walker2d-v4"):
        evaluate_checkpoints(
            checkpoints, chosen, tmp_path / "m.json", tmp_path / "e.csv", progress=False, dataset=walker
        )
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "e.csv").exists()
