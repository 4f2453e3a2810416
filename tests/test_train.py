"""The train stage: checkpoints, resume after SIGKILL, DDP, the speed switches, bad params."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
import torch
import yaml

from dtrepro.agent.checkpoint import Checkpoint
from dtrepro.agent.model import DecisionTransformer, ModelConfig
from dtrepro.agent.policy import policy_from_checkpoint
from dtrepro.data.d4rl import D4RLData, read_d4rl, write_d4rl
from dtrepro.data.repair import repair_file
from dtrepro.params import RepairParams, Run, TrainParams
from dtrepro.runtime.errors import DtreproError
from dtrepro.training.loop import LOG_FIELDS, LR_FLOOR, lr_factor, train
from dtrepro.training.resume import fingerprint, resume_path
from dtrepro.training.sampler import WindowSampler

from helpers import HOPPER, ROOT, one_line, params, run

TINY_MODEL = {"embed_dim": 32, "layers": 1, "heads": 2, "dropout": 0.1}
TINY_TRAIN = {
    "batch_size": 16,
    "warmup_steps": 5,
    "lr_decay": "none",
    "steps": 40,
    "amp": False,
    "compile": False,
    "checkpoint_every": 10,
    "eval_every": 20,
    "eval_episodes": 1,
}
TINY_RUN = {"device": "cpu", "log_every": 5}


@pytest.fixture(scope="module")
def clean_file(hopper_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.hdf5"
    repair_file(hopper_file, out, out.with_suffix(".json"), RepairParams.from_params(params(), HOPPER))
    return out


def write_params(path, **train):
    run = {**TINY_RUN, **{k: train.pop(k) for k in ("log_every",) if k in train}}
    path.write_text(yaml.safe_dump(params(run=run, model=TINY_MODEL, train={**TINY_TRAIN, **train})))
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
    return log_rows_of(path.read_bytes())


def log_rows_of(text: bytes):
    rows = csv.DictReader(text.decode().splitlines(), delimiter="\t")
    return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rows]


def train_stage(cmd, *prefix) -> subprocess.CompletedProcess:
    return run([sys.executable, *prefix, *cmd], ROOT, timeout=600)


def train_here(clean_file, out, **train_values) -> None:
    """The train stage's work in this process (what the stage script adds is tested by the tests that run it)."""
    values = params(run=TINY_RUN, model=TINY_MODEL, train={**TINY_TRAIN, **train_values})
    paths = (out / "models", out / "log.tsv", out / "train.json")
    train(TrainParams.from_params(values, HOPPER), Run(5, 0), clean_file, *paths, dataset=HOPPER)


def test_checkpoint_round_trip_gives_identical_actions(clean_file, tmp_path):
    out = tmp_path / "run"
    train_here(clean_file, out)
    policy, ckpt = policy_from_checkpoint(out / "models" / "last.pt")
    assert ckpt.step == 40 and ckpt.train_seed == 0 and ckpt.env_id == "Hopper-v4"
    assert set(torch.load(out / "models" / "last.pt", weights_only=True)) == {f.name for f in fields(Checkpoint)}
    state = torch.load(resume_path(out / "models"), weights_only=True)  # the resume state, beside, no output
    assert state["step"] == 40 and {"optimizer", "scheduler", "rng", "rng_sampler", "log"} <= set(state)
    best, best_ckpt = policy_from_checkpoint(out / "models" / "best.pt")
    assert best_ckpt.config == ckpt.config and best_ckpt.step in (20, 40)
    fresh = DecisionTransformer(ModelConfig(**ckpt.config))
    fresh.load_state_dict(ckpt.model)
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
    last, state = cut / "models" / "last.pt", resume_path(cut / "models")
    assert not last.exists() and torch.load(state, weights_only=True)["step"] == 125  # the state before the kill
    resumed = train_stage(cmd)
    assert resumed.returncode == 0 and f"resuming from {state} at step 125" in resumed.stdout
    a, b = weights(whole / "models" / "last.pt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert log_rows(cut / "log.tsv") == log_rows(whole / "log.tsv")  # the log survives the resume whole
    assert len(log_rows(whole / "log.tsv")) == 300 // 5


@pytest.mark.slow  # two stage runs end to end
def test_an_averaged_run_saves_the_average_and_resumes_to_the_uninterrupted_one(clean_file, tmp_path):
    """train.ema_decay: last.pt holds the running average of the weights, not the last step's, and a killed run
    resumes with that average whole (it fails if the resume state lost it)."""
    params_path = write_params(tmp_path / "params.yaml", ema_decay=0.9)
    train_here(clean_file, whole := tmp_path / "whole", ema_decay=0.9)
    state = torch.load(resume_path(whole / "models"), weights_only=True)
    last = weights(whole / "models" / "last.pt")
    assert all(torch.equal(last[k], state["ema"][f"module.{k}"]) for k in last)
    assert not all(torch.equal(last[k], state["model"][k]) for k in last)  # the average, not the step's weights
    assert state["ema"]["n_averaged"] == 40

    cmd, cut = train_cmd(tmp_path, params_path, "killed", data=clean_file)
    assert train_stage(cmd, "-c", KILL_AT_STEP, "25").returncode == -signal.SIGKILL
    resumed = train_stage(cmd)
    assert resumed.returncode == 0 and "at step 20" in resumed.stdout
    for name in ("last.pt", "best.pt"):
        a, b = weights(whole / "models" / name), weights(cut / "models" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_without_averaging_last_pt_holds_the_last_step_s_weights(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml", steps=10), data=clean_file)
    assert train_stage(cmd).returncode == 0
    state, last = torch.load(resume_path(out / "models"), weights_only=True), weights(out / "models" / "last.pt")
    assert state["ema"] is None and all(torch.equal(last[k], state["model"][k]) for k in last)


OUTPUTS = ("models/last.pt", "models/best.pt", "log.tsv", "train.json")


@pytest.mark.slow
def test_a_complete_run_writes_its_outputs_again_without_training(clean_file, tmp_path):
    """What `dvc repro -f` leaves: DVC deleted the outputs, the complete resume state of the same code is there."""
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml"), data=clean_file)
    assert train_stage(cmd).returncode == 0
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    for name in OUTPUTS:
        (out / name).unlink()
    again = train_stage(cmd)
    assert again.returncode == 0 and "at step 40" in again.stdout
    assert log_rows(out / "log.tsv") == log_rows_of(before["log.tsv"])
    assert all((out / name).read_bytes() == before[name] for name in OUTPUTS[:2])  # the same bytes


@pytest.mark.slow  # two stage runs end to end
def test_retraining_gives_byte_identical_checkpoints_even_beside_a_busy_process(clean_file, tmp_path):
    """Nothing of the clock in a .pt file: the same params, data and seed, the same bytes (so DVC re-runs nothing
    downstream of a model that came out the same; fails if last.pt carried the log's throughput). And threads are
    chosen once, from the CPUs the process may use, not from the load: a run beside a busy process is the same."""
    params_path = write_params(tmp_path / "params.yaml", steps=20)
    outs = []
    for name in ("alone", "beside"):
        cmd, out = train_cmd(tmp_path, params_path, name, data=clean_file)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if name == "beside" else None
        try:
            assert train_stage(cmd).returncode == 0
        finally:
            if busy:
                busy.kill()
                busy.wait()
        outs.append(out)
    for name in OUTPUTS[:2]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def test_another_code_fingerprint_starts_afresh(clean_file, tmp_path, monkeypatch):
    """A resume state is used only by the code that wrote it: an edit to the training code never keeps old weights."""
    chosen = TrainParams.from_params(params(run=TINY_RUN, model=TINY_MODEL, train={**TINY_TRAIN, "steps": 10}), HOPPER)
    paths = (clean_file, tmp_path / "m", tmp_path / "log.tsv", tmp_path / "m.json")
    train(chosen, Run(5, 0), *paths, code_sha256="before", dataset=HOPPER)
    state = torch.load(resume_path(tmp_path / "m"), weights_only=True)
    sampled = []
    monkeypatch.setattr(WindowSampler, "sample", lambda self, f=WindowSampler.sample: sampled.append(1) or f(self))
    train(chosen, Run(5, 0), *paths, code_sha256="after", dataset=HOPPER)
    assert len(sampled) == 10  # trained all ten steps again
    assert torch.load(resume_path(tmp_path / "m"), weights_only=True)["fingerprint"] != state["fingerprint"]


def test_lr_warms_up_then_stays_or_decays_by_a_cosine_to_the_floor():
    steps, warmup = 100, 10
    constant = TrainParams.from_params(
        params(run=TINY_RUN, model=TINY_MODEL, train={**TINY_TRAIN, "steps": steps, "warmup_steps": warmup}), HOPPER
    )
    cosine = constant.model_copy(update={"lr_decay": "cosine"})
    for chosen in (constant, cosine):
        assert [lr_factor(chosen, s) for s in range(warmup)] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert {lr_factor(constant, s) for s in range(warmup, steps)} == {1.0}
    decay = [lr_factor(cosine, s) for s in range(warmup - 1, steps)]
    assert decay[0] == 1.0 and decay[-1] == pytest.approx(LR_FLOOR) and all(np.diff(decay) < 0)
    assert lr_factor(cosine, (warmup - 1 + steps - 1) // 2) == pytest.approx((1 + LR_FLOOR) / 2, abs=0.02)


def test_the_log_shows_the_decaying_rate_of_a_cosine_run(clean_file, tmp_path):
    train_here(clean_file, out := tmp_path / "run", lr_decay="cosine", lr=1e-3)
    logged = [float(r["lr"]) for r in log_rows(out / "log.tsv") if r["lr"]]
    assert logged[-1] == pytest.approx(1e-3 * LR_FLOOR) and all(np.diff(logged[1:]) < 0)


def test_a_truncated_resume_state_is_said_then_training_starts_afresh(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "params.yaml", steps=10), data=clean_file)
    state = resume_path(out / "models")
    state.parent.mkdir(parents=True)
    state.write_bytes(b"PK\x03\x04 cut short")
    proc = train_stage(cmd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "damaged or cut short: starting afresh" in proc.stdout and "Traceback" not in proc.stderr
    assert torch.load(out / "models" / "last.pt", weights_only=True)["step"] == 10


@pytest.mark.slow
def test_changed_params_do_not_resume_an_old_checkpoint(clean_file, tmp_path):
    cmd, out = train_cmd(tmp_path, write_params(tmp_path / "a.yaml", steps=20), data=clean_file)
    assert train_stage(cmd).returncode == 0
    cmd, _ = train_cmd(tmp_path, write_params(tmp_path / "b.yaml", steps=30, lr=1e-3), data=clean_file)
    again = train_stage(cmd)
    assert again.returncode == 0 and "starting afresh" in again.stdout


def test_the_run_section_does_not_change_the_fingerprint():
    base = TrainParams.from_params(params(run=TINY_RUN, model=TINY_MODEL, train=TINY_TRAIN), HOPPER)
    other = TrainParams.from_params(
        params(run={"log_every": 7, "device": "auto"}, model=TINY_MODEL, train=TINY_TRAIN), HOPPER
    )

    def key(chosen, run="k5-seed0", data="sha", code="code"):
        return fingerprint(chosen.shaping, run, data, code)

    assert key(base) == key(other)
    changed = TrainParams.from_params(params(run=TINY_RUN, model=TINY_MODEL, train={**TINY_TRAIN, "lr": 0.5}), HOPPER)
    assert len({key(base), key(changed), key(base, run="k5-seed1"), key(base, data="x"), key(base, code="y")}) == 5


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
def test_two_processes_on_gloo_average_their_gradients_into_one_process_s_weights(clean_file, tmp_path):
    """torchrun's two processes, each with half of the global batch, end with the weights one process gets from the
    whole batch (dropout 0). Fails if the gradients were not averaged (rank 0 would have learnt from its half alone),
    if the ranks drew other windows than one process does, or if rank 1 wrote too."""
    params_path = write_params(tmp_path / "params.yaml", steps=8, log_every=4, checkpoint_every=4, eval_every=8)
    text = yaml.safe_load(params_path.read_text())
    text["model"]["dropout"] = 0.0
    params_path.write_text(yaml.safe_dump(text))
    cmd, one = train_cmd(tmp_path, params_path, "one", data=clean_file)
    assert train_stage(cmd).returncode == 0
    cmd, two = train_cmd(tmp_path, params_path, "two", data=clean_file)
    proc = train_stage(cmd, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((two / "train.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 8
    assert proc.stdout.count(f"train {HOPPER} k5-seed0: 8 steps") == 1  # rank 0 alone writes
    assert len(torch.load(resume_path(two / "models"), weights_only=True)["rng"]) == 2
    a, b = weights(one / "models" / "last.pt"), weights(two / "models" / "last.pt")
    start = DecisionTransformer(ModelConfig(**torch.load(one / "models" / "last.pt", weights_only=True)["config"]))
    assert any(not torch.allclose(a[k], start.state_dict()[k]) for k in a)  # training moved the weights
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_each_rank_takes_the_gpu_of_its_local_rank(monkeypatch):
    """Under torchrun every rank uses cuda:LOCAL_RANK, not cuda:0; a rank beyond the node's GPUs is refused.
    No GPU here: only the GPU count is mocked."""
    from dtrepro.training.ddp import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [rank_device(torch.device("cuda"), r) for r in range(4)] == [torch.device("cuda", r) for r in range(4)]
    assert rank_device(torch.device("cpu"), 3) == torch.device("cpu")
    with pytest.raises(DtreproError, match="LOCAL_RANK=4 has no GPU of its own: this node has 4"):
        rank_device(torch.device("cuda"), 4)


def test_ddp_is_built_with_the_rank_s_device_ids(monkeypatch):
    """The DDP wrapper gets device_ids=[local_rank] on CUDA (nanoGPT's `DDP(model, device_ids=[ddp_local_rank])`)."""
    from dtrepro.training import ddp as ddp_module

    seen = {}
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, **kw: seen.update(kw) or model)
    ddp_module.Distributed(1, 2, 1, torch.device("cuda", 1)).wrap(torch.nn.Linear(1, 1))
    assert seen == {"device_ids": [1]}
    ddp_module.Distributed(1, 2, 1, torch.device("cpu")).wrap(torch.nn.Linear(1, 1))
    assert seen == {"device_ids": None}


@pytest.mark.slow
def test_bf16_autocast_and_compile_on_cpu(clean_file, tmp_path):
    """Autocast and compile really apply: the same seed's losses differ from float32's by bf16's rounding only. An
    amp switch that was ignored would give float32's losses exactly; a broken autocast, losses far apart or NaN."""
    losses = {}
    for amp in (True, False):
        folder = tmp_path / f"amp-{amp}"
        folder.mkdir()
        params_path = write_params(folder / "params.yaml", steps=10, amp=amp, compile=amp, eval_every=10)
        cmd, out = train_cmd(folder, params_path, data=clean_file)
        proc = train_stage(cmd)
        assert proc.returncode == 0, proc.stderr[-3000:]
        losses[amp] = json.loads((out / "train.json").read_text())["final_loss"]
    assert all(np.isfinite(v) and v > 0 for v in losses.values()), losses
    assert losses[True] != losses[False] and losses[True] == pytest.approx(losses[False], rel=0.1), losses


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
            {
                "model": {**params()["model"], **TINY_MODEL, **model},
                "train": {**params()["train"], **TINY_TRAIN, **train},
                "run": TINY_RUN,
            }
        )


def test_a_context_longer_than_every_episode_is_refused(clean_file, tmp_path):
    chosen = TrainParams.from_params(params(run=TINY_RUN, model=TINY_MODEL, train=TINY_TRAIN), HOPPER)
    with pytest.raises(DtreproError, match="longer than every episode"):
        train(
            chosen, Run(5000, 0), clean_file, tmp_path / "m", tmp_path / "log.tsv", tmp_path / "m.json", dataset=HOPPER
        )


def test_a_d4rl_file_carrying_reference_scores_is_still_normalised_with_d4rls(clean_file, tmp_path):
    """A hopper-medium-v2 file whose metadata claim references of 0 and 100 (a file given through data.url) trains
    a model whose checkpoints and evaluations use D4RL's: the file cannot redefine "D4RL-normalised"."""
    data = read_d4rl(clean_file)
    forged = tmp_path / "forged.hdf5"
    write_d4rl(forged, D4RLData(data.arrays, {**data.metadata, "ref_min_score": 0.0, "ref_max_score": 100.0}))
    chosen = TrainParams.from_params(params(run=TINY_RUN, model=TINY_MODEL, train={**TINY_TRAIN, "steps": 5}), HOPPER)
    metrics = train(
        chosen, Run(5, 0), forged, tmp_path / "m", tmp_path / "log.tsv", tmp_path / "m.json", dataset=HOPPER
    )
    assert metrics["ref_scores_source"] == "d4rl"
    refs = Checkpoint.load(tmp_path / "m" / "last.pt").ref_scores
    assert (refs["ref_min_score"], refs["ref_max_score"]) == (-20.272305, 3234.3)


def test_the_training_metrics_name_what_the_bytes_depend_on(clean_file, tmp_path):
    """Device, processor and thread count: a float32 CPU training's bytes depend on the last (docs/pipeline.md)."""
    chosen = TrainParams.from_params(params(run=TINY_RUN, model=TINY_MODEL, train={**TINY_TRAIN, "steps": 5}), HOPPER)
    metrics = train(
        chosen, Run(5, 0), clean_file, tmp_path / "m", tmp_path / "log.tsv", tmp_path / "m.json", dataset=HOPPER
    )
    from dtrepro.runtime.threads import cpu_model

    assert metrics["device"] == "cpu" and metrics["processor"] == cpu_model()
    assert metrics["threads"] == torch.get_num_threads() >= 1
    assert json.loads((tmp_path / "m.json").read_text())["threads"] == metrics["threads"]
