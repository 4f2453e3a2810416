"""The train stage: checkpoints, resume after SIGKILL, DDP, the speed switches, bad params."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from dtrepro.data.repair import RepairParams, repair_file
from dtrepro.errors import DtreproError
from dtrepro.evaluate import policy_from_checkpoint
from dtrepro.model import DecisionTransformer, ModelConfig
from dtrepro.train import TrainConfig, Trainer

from conftest import ROOT, run

TINY_MODEL = {"embed_dim": 32, "layers": 1, "heads": 2, "dropout": 0.1}
TINY_TRAIN = {
    "batch_size": 16,
    "warmup_steps": 5,
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
    repair_file(hopper_file, out, out.with_suffix(".json"), RepairParams())
    return out


def write_params(path, **train):
    path.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {**TINY_TRAIN, **train}}))
    return path


def train_cmd(tmp_path, params, name="run"):
    out = tmp_path / name
    return [
        sys.executable,
        str(ROOT / "stages/train.py"),
        "--params",
        str(params),
        "--context-len",
        "5",
        "--seed",
        "0",
        "--out-dir",
        str(out / "models"),
        "--log-file",
        str(out / "log.tsv"),
        "--metrics",
        str(out / "train.json"),
    ], out


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_checkpoint_round_trip_gives_identical_actions(clean_file, tmp_path):
    params = write_params(tmp_path / "params.yaml")
    cmd, out = train_cmd(tmp_path, params)
    assert run(cmd + ["--data", str(clean_file)], ROOT).returncode == 0
    policy, ckpt = policy_from_checkpoint(out / "models" / "last.pt")
    assert (
        ckpt["step"] == 40
        and ckpt["train_seed"] == 0
        and set(ckpt) >= {"optimizer", "scheduler", "rng_torch", "rng_samplers"}
    )
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
    assert log[0].split("\t")[:3] == ["step", "loss", "lr"] and len(log) == 1 + 8


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(clean_file, tmp_path):
    params = write_params(tmp_path / "params.yaml", steps=300, checkpoint_every=25, eval_every=100)
    cmd, out = train_cmd(tmp_path, params, "whole")
    assert run(cmd + ["--data", str(clean_file)], ROOT).returncode == 0

    cmd, cut = train_cmd(tmp_path, params, "killed")
    proc = subprocess.Popen(
        cmd + ["--data", str(clean_file)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = cut / "models" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["step"]
    assert 0 < killed_at < 300, "the run ended before it could be killed"
    resumed = run(cmd + ["--data", str(clean_file)], ROOT)
    assert resumed.returncode == 0 and f"resuming from {last} at step {killed_at}" in resumed.stdout
    a, b = weights(out / "models" / "last.pt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "log.tsv").read_text().count("\n") == (cut / "log.tsv").read_text().count("\n")


def test_changed_params_do_not_resume_an_old_checkpoint(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "a.yaml", steps=20))
    assert run(cmd + ["--data", str(clean_file)], ROOT).returncode == 0
    cmd, _ = train_cmd(tmp_path, write_params(tmp_path / "b.yaml", steps=30, lr=1e-3))
    again = run(cmd + ["--data", str(clean_file)], ROOT)
    assert again.returncode == 0 and "starting afresh" in again.stdout


@pytest.mark.slow
def test_two_process_ddp_on_gloo(clean_file, tmp_path):
    params = write_params(tmp_path / "params.yaml", steps=20)
    cmd, out = train_cmd(tmp_path, params)
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + cmd[1:]
    proc = run(ddp + ["--data", str(clean_file)], ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "train.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 20
    ckpt = torch.load(out / "models" / "last.pt", weights_only=True)
    assert len(ckpt["rng_samplers"]) == 2 and proc.stdout.count("train k5-seed0: 20 steps") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_bf16_autocast_and_compile_on_cpu(clean_file, tmp_path):
    params = write_params(tmp_path / "params.yaml", steps=10, amp=True, compile=True, eval_every=10)
    cmd, out = train_cmd(tmp_path, params)
    proc = run(cmd + ["--data", str(clean_file)], ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "train.json").read_text())["final_loss"] > 0


@pytest.mark.parametrize(
    "model, train, context_len, message",
    [
        ({}, {}, 5000, "longer than every episode"),
        ({}, {"batch_size": 0}, 5, "at least 1"),
        ({"heads": 3}, {}, 5, "multiple of model.heads"),
        ({"embed_dims": 3}, {}, 5, "Unknown model/train param"),
        ({"context_len": 5}, {}, 5, "comes from the study section"),
        ({}, {"seed": 1}, 5, "comes from the study section"),
    ],
)
def test_bad_params_get_a_clear_error(clean_file, tmp_path, model, train, context_len, message):
    with pytest.raises(DtreproError, match=message):
        cfg = TrainConfig.from_params({**TINY_MODEL, **model}, {**TINY_TRAIN, **train}, context_len, 0)
        Trainer(cfg, clean_file, tmp_path / "m", tmp_path / "log.tsv", "sha")


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
