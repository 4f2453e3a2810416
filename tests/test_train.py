"""The train stage: checkpoints, resume after SIGKILL, DDP, the speed switches, bad params."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from dtrepro.agent.model import DecisionTransformer, ModelConfig
from dtrepro.agent.policy import policy_from_checkpoint
from dtrepro.data.d4rl import D4RLData, read_d4rl, write_d4rl
from dtrepro.data.repair import RepairParams, repair_file
from dtrepro.errors import DtreproError
from dtrepro.study import Run
from dtrepro.training.loop import LOG_FIELDS, LR_FLOOR, TrainParams, lr_factor, train

from helpers import HOPPER, ROOT, one_line, params, run

TINY_MODEL = {"embed_dim": 32, "layers": 1, "heads": 2, "dropout": 0.1}
TINY_TRAIN = {
    "batch_size": 16,
    "warmup_steps": 5,
    "lr_decay": "none",
    "steps": 40,
    "amp": False,
    "compile": False,
    "log_every": 5,
    "checkpoint_every": 10,
    "eval_every": 20,
    "eval_episodes": 2,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def clean_file(hopper_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.hdf5"
    repair_file(hopper_file, out, out.with_suffix(".json"), RepairParams.from_params(params(), HOPPER))
    return out


def write_params(path, **train):
    path.write_text(yaml.safe_dump(params(model=TINY_MODEL, train={**TINY_TRAIN, **train})))
    return path


def train_cmd(tmp_path, params_path, name="run", data=None):
    out = tmp_path / name
    return [
        str(ROOT / "stages/train.py"),
        "--params",
        str(params_path),
        "--dataset",
        HOPPER,
        "--context-len",
        "5",
        "--seed",
        "0",
        "--data",
        str(data),
        "--out-dir",
        str(out / "models"),
        "--log-file",
        str(out / "log.tsv"),
        "--metrics",
        str(out / "train.json"),
    ], out


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def log_rows(path):
    """The log without its timing columns, which differ between runs."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in csv.DictReader(f, delimiter="\t")]


def train_stage(cmd, *prefix) -> subprocess.CompletedProcess:
    return run([sys.executable, *prefix, *cmd], ROOT, timeout=600)


def test_checkpoint_round_trip_gives_identical_actions(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml"), data=clean_file)
    assert train_stage(cmd).returncode == 0
    policy, ckpt = policy_from_checkpoint(out / "models" / "last.pt")
    assert ckpt["step"] == 40 and ckpt["train_seed"] == 0
    assert set(ckpt) >= {"optimizer", "scheduler", "rng_torch", "rng_samplers", "log"}
    best, best_ckpt = policy_from_checkpoint(out / "models" / "best.pt")
    assert "optimizer" not in best_ckpt and best_ckpt["config"] == ckpt["config"]
    fresh = DecisionTransformer(ModelConfig(**ckpt["config"]))
    fresh.load_state_dict(ckpt["model"])
    x = (
        torch.randn(3, 5, 11),
        torch.randn(3, 5, 3),
        torch.randn(3, 5),
        torch.arange(5).expand(3, 5),
        torch.ones(3, 5, dtype=torch.bool),
    )
    assert torch.equal(policy.model.eval()(*x), fresh.eval()(*x))
    metrics = json.loads((out / "train.json").read_text())
    assert metrics["steps"] == 40 and metrics["best_step"] in (20, 40)
    log = (out / "log.tsv").read_text().splitlines()
    assert tuple(log[0].split("\t")) == LOG_FIELDS and len(log) == 1 + 8


# Runs the train stage and SIGKILLs it at the start of training step KILL_AT (before that step's update).
KILL_AT_STEP = """
import os, runpy, signal, sys
import dtrepro.training.loop
loss, calls, kill_at = dtrepro.training.loop.action_loss, [0], int(sys.argv.pop(1))
def killing_loss(*args):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return loss(*args)
dtrepro.training.loop.action_loss = killing_loss
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_weights_and_log(clean_file, tmp_path):
    params_path = write_params(tmp_path / "params.yaml", steps=300, checkpoint_every=25, eval_every=100)
    cmd, whole = train_cmd(tmp_path, params_path, "whole", data=clean_file)
    assert train_stage(cmd).returncode == 0

    cmd, cut = train_cmd(tmp_path, params_path, "killed", data=clean_file)
    killed = train_stage(cmd, "-c", KILL_AT_STEP, "140")
    assert killed.returncode == -signal.SIGKILL
    last = cut / "models" / "last.pt"
    assert torch.load(last, weights_only=True)["step"] == 125  # the checkpoint before the kill
    resumed = train_stage(cmd)
    assert resumed.returncode == 0 and f"resuming from {last} at step 125" in resumed.stdout
    a, b = weights(whole / "models" / "last.pt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert log_rows(cut / "log.tsv") == log_rows(whole / "log.tsv")  # the log survives the resume whole
    assert len(log_rows(whole / "log.tsv")) == 300 // 5


@pytest.mark.slow
def test_a_complete_run_writes_its_outputs_again_without_training(clean_file, tmp_path):
    """What `dvc repro -f` or an edit to the stage's code leaves: last.pt complete, the log and metrics deleted."""
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml"), data=clean_file)
    assert train_stage(cmd).returncode == 0
    before, weights_before = log_rows(out / "log.tsv"), weights(out / "models" / "last.pt")
    (out / "log.tsv").unlink()
    (out / "train.json").unlink()
    again = train_stage(cmd)
    assert again.returncode == 0 and "at step 40" in again.stdout
    assert log_rows(out / "log.tsv") == before and json.loads((out / "train.json").read_text())["steps"] == 40
    after = weights(out / "models" / "last.pt")
    assert all(torch.equal(weights_before[k], after[k]) for k in after)


def test_lr_warms_up_then_stays_or_decays_by_a_cosine_to_the_floor():
    steps, warmup = 100, 10
    constant = TrainParams.from_params(
        params(model=TINY_MODEL, train={**TINY_TRAIN, "steps": steps, "warmup_steps": warmup}), HOPPER
    )
    cosine = constant.model_copy(update={"lr_decay": "cosine"})
    for chosen in (constant, cosine):
        assert [lr_factor(chosen, s) for s in range(warmup)] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert {lr_factor(constant, s) for s in range(warmup, steps)} == {1.0}
    decay = [lr_factor(cosine, s) for s in range(warmup - 1, steps)]
    assert decay[0] == 1.0 and decay[-1] == pytest.approx(LR_FLOOR) and all(np.diff(decay) < 0)
    assert lr_factor(cosine, (warmup - 1 + steps - 1) // 2) == pytest.approx((1 + LR_FLOOR) / 2, abs=0.02)


def test_the_log_shows_the_decaying_rate_of_a_cosine_run(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml", lr_decay="cosine", lr=1e-3), data=clean_file)
    assert train_stage(cmd).returncode == 0
    logged = [float(r["lr"]) for r in log_rows(out / "log.tsv") if r["lr"]]
    assert logged[-1] == pytest.approx(1e-3 * LR_FLOOR) and all(np.diff(logged[1:]) < 0)


def test_a_truncated_last_pt_is_said_then_training_starts_afresh(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml", steps=10), data=clean_file)
    last = out / "models" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut short")
    proc = train_stage(cmd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "damaged or cut short: starting afresh" in proc.stdout and "Traceback" not in proc.stderr
    assert torch.load(last, weights_only=True)["step"] == 10


@pytest.mark.slow
def test_changed_params_do_not_resume_an_old_checkpoint(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "a.yaml", steps=20), data=clean_file)
    assert train_stage(cmd).returncode == 0
    cmd, _ = train_cmd(tmp_path, write_params(tmp_path / "b.yaml", steps=30, lr=1e-3), data=clean_file)
    again = train_stage(cmd)
    assert again.returncode == 0 and "starting afresh" in again.stdout


def test_log_every_and_device_do_not_change_the_fingerprint():
    base = TrainParams.from_params(params(model=TINY_MODEL, train=TINY_TRAIN), HOPPER)
    other = TrainParams.from_params(
        params(model=TINY_MODEL, train={**TINY_TRAIN, "log_every": 7, "device": "auto"}), HOPPER
    )
    assert base.fingerprint(Run(5, 0), "sha") == other.fingerprint(Run(5, 0), "sha")
    changed = TrainParams.from_params(params(model=TINY_MODEL, train={**TINY_TRAIN, "lr": 0.5}), HOPPER)
    assert base.fingerprint(Run(5, 0), "sha") != changed.fingerprint(Run(5, 0), "sha")
    assert base.fingerprint(Run(5, 0), "sha") != base.fingerprint(Run(5, 1), "sha")


def write_variant(clean_file, path, **arrays):
    data = read_d4rl(clean_file)
    write_d4rl(path, D4RLData({**data.arrays, **arrays}, data.metadata))
    return path


def test_a_diverging_loss_stops_training_with_a_clear_error(clean_file, tmp_path):
    huge = read_d4rl(clean_file).arrays["rewards"] * 1e30  # repair refuses these; here they skip it
    data = write_variant(clean_file, tmp_path / "huge.hdf5", rewards=huge)
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml"), data=data)
    proc = train_stage(cmd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "diverged: the loss became nan between steps 0 and 5" in one_line(proc.stderr)
    assert not (out / "train.json").exists() and not (out / "log.tsv").exists()


def test_a_dataset_of_another_env_is_refused_before_training(clean_file, tmp_path):
    obs = read_d4rl(clean_file).arrays["observations"]
    wide = np.concatenate([obs, obs[:, :6]], axis=1)  # 17 columns, as Walker2d's
    data = write_variant(clean_file, tmp_path / "wide.hdf5", observations=wide, next_observations=wide)
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml"), data=data)
    proc = train_stage(cmd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "17-dim states and 3-dim actions, but train.env_id Hopper-v4 has 11-dim observations" in one_line(
        proc.stderr
    )
    assert not (out / "models").exists()


@pytest.mark.slow
def test_two_process_ddp_on_gloo(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml", steps=20), data=clean_file)
    proc = train_stage(cmd, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "train.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 20
    ckpt = torch.load(out / "models" / "last.pt", weights_only=True)
    assert (
        len(ckpt["rng_samplers"]) == 2 and proc.stdout.count(f"train {HOPPER} k5-seed0: 20 steps") == 1
    )  # rank 0 alone


@pytest.mark.slow
def test_bf16_autocast_and_compile_on_cpu(clean_file, tmp_path):
    params_path = write_params(tmp_path / "params.yaml", steps=10, amp=True, compile=True, eval_every=10)
    cmd, out = train_cmd(tmp_path, params_path, data=clean_file)
    proc = train_stage(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "train.json").read_text())["final_loss"] > 0


@pytest.mark.parametrize(
    "model, train, message",
    [
        ({}, {"batch_size": 0}, "train.batch_size is 0 .int.: input should be greater than or equal to 1"),
        ({"heads": 3}, {}, "embed_dim=32 must be a multiple of heads=3"),
        ({"embed_dims": 3}, {}, "model.embed_dims is not a parameter"),
        ({"context_len": 5}, {}, "model.context_len is not a parameter"),
        ({}, {"seed": 1}, "train.seed is not a parameter"),
        ({}, {"lr": "abc"}, "train.lr is 'abc' .str.: input should be a valid number"),
    ],
)
def test_bad_params_get_a_clear_error(model, train, message):
    with pytest.raises(DtreproError, match=message):
        TrainParams.from_params(
            {"model": {**TINY_MODEL, **model}, "train": {**params()["train"], **TINY_TRAIN, **train}}
        )


def test_a_context_longer_than_every_episode_is_refused(clean_file, tmp_path):
    chosen = TrainParams.from_params(params(model=TINY_MODEL, train=TINY_TRAIN), HOPPER)
    with pytest.raises(DtreproError, match="longer than every episode"):
        train(chosen, Run(5000, 0), clean_file, tmp_path / "m", tmp_path / "log.tsv", tmp_path / "m.json")


def test_autocast_choice(monkeypatch):
    """bf16 where supported, fp16 (with a grad scaler) on GPUs without bf16, nothing when AMP is off."""
    from dtrepro.device import autocast_dtype

    cuda = torch.device("cuda")
    assert autocast_dtype(torch.device("cpu"), True) == torch.bfloat16
    assert autocast_dtype(cuda, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # no GPU here: its answer is mocked
    assert autocast_dtype(cuda, True) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(cuda, True) == torch.float16


def test_cuda_requested_without_cuda_is_a_clear_error():
    from dtrepro.device import pick_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DtreproError, match="CUDA is not available"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"
