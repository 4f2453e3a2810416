"""Train a Decision Transformer on a clean D4RL file: one readable loop with its speed switches in view.

The dataset is loaded once onto the training device; batches come from `WindowSampler` without
leaving it. Every `checkpoint_every` steps the resume state is written (`dtrepro.training.resume`),
so a run killed at any moment resumes from it and ends where an uninterrupted run would, with the
whole log. Every `eval_every` steps a few episodes score the model; the best is `best.pt`, the final
weights `last.pt`, both written at the end (`dtrepro.agent.checkpoint`). Under `torchrun` the same
loop runs as DDP (`dtrepro.training.ddp`): the global batch split over the ranks, rank 0 evaluates
and writes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dtrepro.agent.checkpoint import Checkpoint
from dtrepro.agent.device import autocast_dtype, pick_device
from dtrepro.agent.envs import make_env
from dtrepro.agent.episodes import run_episodes
from dtrepro.agent.model import MAX_TIMESTEP, DecisionTransformer, ModelConfig, action_loss
from dtrepro.agent.policy import Policy
from dtrepro.data.checksum import file_sha256
from dtrepro.data.d4rl import read_d4rl, require_regular_file
from dtrepro.params import Run, TrainParams
from dtrepro.registry.scores import normalized_score, reference_scores
from dtrepro.runtime.atomic import atomic_output, write_json
from dtrepro.runtime.errors import DtreproError
from dtrepro.runtime.progress import progress
from dtrepro.runtime.threads import cpu_model
from dtrepro.training.ddp import Distributed
from dtrepro.training.resume import ResumeState, fingerprint, resume_path
from dtrepro.training.sampler import Trajectories, WindowSampler

LOG_FIELDS = ("step", "loss", "lr", "samples_per_s", "tokens_per_s", "eval_return", "eval_score")
# the cosine decay ends at this share of train.lr: the floor of the DT paper's Atari trainer (minGPT's),
# which clips its cosine there where this one is scaled to reach it at the last step
LR_FLOOR = 0.1


def check_data_fits_env(data: Trajectories, env_id: str, data_path) -> None:
    """Refuse, before any step, a dataset whose state or action width is not the env's."""
    env = make_env(env_id, 1)
    want = (env.observation_space.shape, env.action_space.shape)
    env.close()
    have = ((data.states.shape[1],), (data.actions.shape[1],))
    if have != want:
        raise DtreproError(
            f"{data_path} holds {have[0][0]}-dim states and {have[1][0]}-dim actions, but train.env_id {env_id} "
            f"has {want[0][0]}-dim observations and {want[1][0]}-dim actions. Train on a dataset of that env, "
            f"or set train.env_id (and eval.env_id) to the env the data came from."
        )


def lr_factor(params: TrainParams, step: int) -> float:
    """The learning rate at a step over train.lr: linear warm-up, then constant or a cosine to LR_FLOOR."""
    warmup = max(1, params.warmup_steps)
    if step + 1 < warmup or params.lr_decay == "none":
        return min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step + 1 - warmup) / max(1, params.steps - warmup))
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainLog:
    """The rows of reports/train/<run>.tsv; the resume state carries them too, so a resume never loses one."""

    def __init__(self, path: str | os.PathLike, rows: list[dict] | None = None):
        self.path, self.rows = Path(path), list(rows or [])

    def append(self, row: dict) -> None:
        self.rows.append(row)

    @property
    def evaluations(self) -> list[dict]:
        return [r for r in self.rows if r.get("eval_return") is not None]

    def write(self) -> None:
        with atomic_output(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS, delimiter="\t", restval="")
            writer.writeheader()
            writer.writerows(self.rows)


def evaluate_policy(model, data: Trajectories, params: TrainParams, seed: int) -> float:
    """Mean return of a few seeded episodes at `eval_target`: what picks best.pt."""
    policy = Policy(model, data.state_mean, data.state_std, params.return_scale)
    seeds = range(seed + 10_000, seed + 10_000 + params.eval_episodes)
    returns = run_episodes(policy, params.env_id, seeds, params.eval_target).returns
    model.train()
    return float(returns.mean())


@dataclass
class Parts:
    """What one run trains: the data on the device, its sampler, the model and its optimizer's state."""

    params: TrainParams
    run: Run
    data: Trajectories
    data_sha256: str
    sampler: WindowSampler
    model: DecisionTransformer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    refs: tuple[float, float, str]  # the dataset's reference scores (registry.scores.reference_scores)
    ema: AveragedModel | None  # the exponential moving average of the weights (train.ema_decay > 0)

    @classmethod
    def build(
        cls, params: TrainParams, run: Run, dataset: str, data_path, ddp: Distributed, scaler, fused_adamw: bool
    ) -> "Parts":
        data_sha256 = file_sha256(require_regular_file(data_path, "train's --data"))
        raw = read_d4rl(data_path)
        refs = reference_scores(raw.metadata, dataset)
        data = Trajectories.from_d4rl(raw, params.return_scale, MAX_TIMESTEP, ddp.device)
        del raw
        check_data_fits_env(data, params.env_id, data_path)
        sampler = WindowSampler(data, run.context_len, params.batch_size, run.seed, (ddp.rank, ddp.world))
        dims = {"state_dim": data.states.shape[1], "act_dim": data.actions.shape[1], "context_len": run.context_len}
        model = DecisionTransformer(ModelConfig(**params.model.model_dump(), **dims)).to(ddp.device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=fused_adamw
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, params))
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(params.ema_decay)) if params.ema_decay else None
        return cls(params, run, data, data_sha256, sampler, model, optimizer, scheduler, scaler, refs, ema)

    @property
    def weights(self) -> DecisionTransformer:
        """What is evaluated and saved: the weights' running average where train.ema_decay asks, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, step: int) -> Checkpoint:
        return Checkpoint(
            model={k: v.detach().cpu().clone() for k, v in self.weights.state_dict().items()},
            config=self.model.cfg.to_dict(),
            state_mean=torch.as_tensor(self.data.state_mean),
            state_std=torch.as_tensor(self.data.state_std),
            return_scale=self.params.return_scale,
            step=step,
            env_id=self.params.env_id,
            ref_scores=dict(zip(("ref_min_score", "ref_max_score", "ref_scores_source"), self.refs, strict=True)),
            train_seed=self.run.seed,
        )

    def state(self, ddp: Distributed, key: str, step: int, best: tuple[float, dict | None], log) -> ResumeState:
        """The resume state at `step` (every rank must call it: their RNG states are gathered)."""
        cuda = torch.cuda.get_rng_state(ddp.device) if ddp.device.type == "cuda" else None
        rng = ddp.gather({"cpu": torch.get_rng_state(), "cuda": cuda})
        optim = (self.optimizer.state_dict(), self.scheduler.state_dict(), self.scaler.state_dict())
        model = self.model.state_dict()
        ema = self.ema.state_dict() if self.ema is not None else None
        return ResumeState(key, step, model, *optim, rng, self.sampler.generator.get_state(), *best, log.rows, ema)

    def restore(self, state: ResumeState, rank: int) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        if self.ema is not None:
            self.ema.load_state_dict(state.ema)
        torch.set_rng_state(state.rng[rank]["cpu"])
        if state.rng[rank]["cuda"] is not None and self.data.states.is_cuda:
            torch.cuda.set_rng_state(state.rng[rank]["cuda"], self.data.states.device)
        self.sampler.generator.set_state(state.rng_sampler)


class Meter:
    """The running loss between log rows, its divergence check, and the throughput (for the log alone)."""

    def __init__(self, params: TrainParams, run: Run, device: torch.device):
        self.params, self.run, self.device = params, run, device
        self._reset()

    def _reset(self) -> None:
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.running = torch.zeros((), device=self.device)

    def add(self, loss: torch.Tensor, step: int, lr: float, bar) -> dict:
        """Count one step; at a log step, the log row (the only sync with the device between evaluations)."""
        self.running += loss.detach()
        self.window_steps += 1
        if step % self.params.run.log_every and step != self.params.steps:
            return {}
        mean = (self.running / self.window_steps).item()
        if not math.isfinite(mean):
            raise DtreproError(
                f"Training {self.run.name} diverged: the loss became {mean} between steps {step - self.window_steps} "
                f"and {step}. Check the data (repair refuses values beyond repair.max_abs_*), lower train.lr, "
                f"or set train.amp: false. No output was written; the resume state before it is kept."
            )
        samples = self.window_steps * self.params.batch_size / (time.perf_counter() - self.window_start)
        bar.set_postfix(loss=f"{mean:.4f}", samples_s=f"{samples:,.0f}", refresh=False)
        self._reset()
        tokens = samples * 3 * self.run.context_len
        return {"step": step, "loss": mean, "lr": lr, "samples_per_s": samples, "tokens_per_s": tokens}


def train(
    params: TrainParams, run: Run, data_path, out_dir, log_path, metrics_path, code_sha256: str = "", *, dataset: str
) -> dict:
    """Train one run of the study; write last.pt, best.pt, the log and the metrics (rank 0). Returns the metrics.

    `code_sha256` stands for the training code (the stage's import closure) in the resume fingerprint."""
    # -- the speed switches, all in one place ------------------------------------------------------------
    ddp = Distributed.from_env(pick_device(params.run.device))  # cuda if present; under torchrun cuda:LOCAL_RANK
    device = ddp.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls
    amp_dtype = autocast_dtype(device, params.amp)  # bf16 autocast, fp16 where the GPU lacks bf16, or None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 needs loss scaling
    fused_adamw = device.type == "cuda"
    # ------------------------------------------------------------------------------------------------------

    torch.manual_seed(run.seed + ddp.rank)
    parts = Parts.build(params, run, dataset, data_path, ddp, scaler, fused_adamw)
    key, state_path = fingerprint(params.shaping, run.name, parts.data_sha256, code_sha256), resume_path(out_dir)
    state = ResumeState.load(state_path, key, say if ddp.main else lambda text: None)
    if state:
        parts.restore(state, ddp.rank)
        say(f"resuming from {state_path} at step {state.step}" if ddp.main else "")
    step, best = (state.step, (state.best_return, state.best)) if state else (0, (-math.inf, None))
    log = TrainLog(log_path, state.log if state else [])
    net = torch.compile(ddp.wrap(parts.model)) if params.compile else ddp.wrap(parts.model)
    autocast = torch.autocast(device.type, amp_dtype) if amp_dtype else contextlib.nullcontext()
    meter, model = Meter(params, run, device), parts.model.train()
    with progress(total=params.steps, initial=step, desc="train", unit="step", shown=ddp.main) as bar:
        while step < params.steps:
            batch = parts.sampler.sample()
            with autocast:
                pred = net(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"], batch["mask"])
            loss = action_loss(pred, batch["actions"], batch["mask"], ddp.loss_denominator(batch["mask"]))
            parts.optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            scaler.step(parts.optimizer)
            scaler.update()
            parts.scheduler.step()
            if parts.ema is not None:
                parts.ema.update_parameters(model)
            step += 1
            bar.update(1)
            row = meter.add(loss, step, parts.scheduler.get_last_lr()[0], bar)
            if ddp.main and (step % params.eval_every == 0 or step == params.steps):
                best, evaluation = evaluate_and_keep_best(parts, step, best)
                row.update(evaluation)
            if row and ddp.main:
                log.append(row)
            if step % params.checkpoint_every == 0 or step == params.steps:
                state = parts.state(ddp, key, step, best, log)  # every rank joins the gather inside
                state.save(state_path) if ddp.main else None
    ddp.close()
    return write_outputs(parts, step, best, log, out_dir, metrics_path, ddp) if ddp.main else {}


def say(text: str) -> None:
    if text:
        print(f"train: {text}", flush=True)


def evaluate_and_keep_best(parts: Parts, step: int, best: tuple[float, dict | None]) -> tuple[tuple, dict]:
    """A periodic evaluation: (the best so far, as (return, checkpoint fields)), and the log's evaluation fields."""
    params = parts.params
    ret = evaluate_policy(parts.weights, parts.data, params, parts.run.seed)
    score = float(normalized_score(ret, params.env_id, parts.refs))
    if ret > best[0]:  # a NaN return is never the best
        best = (ret, asdict(parts.checkpoint(step)))
    return best, {"step": step, "eval_return": ret, "eval_score": score}


def write_outputs(parts: Parts, step: int, best, log: TrainLog, out_dir, metrics_path, ddp) -> dict:
    """last.pt, best.pt, the log and the metrics of a finished run: what this run computed, nothing older."""
    out_dir = Path(out_dir)
    last = parts.checkpoint(step)
    if best[1] is None:
        say("no periodic evaluation gave a finite return: best.pt is last.pt")
    last.save(out_dir / "last.pt")
    (Checkpoint(**best[1]) if best[1] is not None else last).save(out_dir / "best.pt")
    log.write()
    chosen = max(log.evaluations, key=lambda r: r["eval_return"], default={}) if best[1] is not None else {}
    losses = [r["loss"] for r in log.rows if r.get("loss") is not None]
    rates = [r["samples_per_s"] for r in log.rows if r.get("samples_per_s") is not None]
    metrics = {
        "env_id": parts.params.env_id,  # the values the null keys stood for, as this run resolved them
        "eval_target": parts.params.eval_target,
        "steps": step,
        "final_loss": losses[-1] if losses else None,
        "best_step": chosen.get("step", step),
        "best_eval_return": chosen.get("eval_return"),
        "best_eval_score": chosen.get("eval_score"),
        # the median throughput of the log's windows: of the run that trained, the same when a state is rewritten
        "samples_per_s": statistics.median(rates) if rates else None,
        "processes": ddp.world,
        # what the bytes of last.pt depend on beyond params, data and seed (dtrepro.agent.checkpoint)
        "device": ddp.device.type,
        "processor": torch.cuda.get_device_name(ddp.device) if ddp.device.type == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(),
        "ref_scores_source": parts.refs[2],  # what eval_score is normalised with: d4rl, or the data's own (minari)
    }
    write_json(metrics_path, metrics)
    return metrics
