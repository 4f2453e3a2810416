"""Train a Decision Transformer on a clean D4RL file: one readable loop with its speed switches in view.

The dataset is loaded once onto the training device; batches come from
`WindowSampler` without leaving it. Every `checkpoint_every` steps `last.pt` is
written atomically with the optimizer, scheduler and RNG states and the training
log so far, so a run killed at any moment resumes from it and ends where an
uninterrupted run would, with the whole log. Every `eval_every` steps a few
episodes score the model, and the best so far is kept as `best.pt`. Under
`torchrun` the same loop runs as DDP with the global batch split over the ranks;
rank 0 evaluates and writes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from tqdm import tqdm

from dtrepro.agent.envs import make_env
from dtrepro.agent.episodes import run_episodes
from dtrepro.agent.model import MAX_TIMESTEP, DecisionTransformer, ModelConfig, ModelParams, action_loss
from dtrepro.agent.policy import DAMAGED, Policy
from dtrepro.atomic import atomic_output, write_json
from dtrepro.cpus import torch_threads
from dtrepro.data.checksum import file_sha256
from dtrepro.data.d4rl import read_d4rl, require_regular_file
from dtrepro.device import autocast_dtype, pick_device
from dtrepro.errors import DtreproError
from dtrepro.params import PARAMS_FILE, Params
from dtrepro.registry.scores import normalized_score, reference_scores
from dtrepro.study import Run
from dtrepro.training.sampler import Trajectories, WindowSampler

LOG_FIELDS = ("step", "loss", "lr", "samples_per_s", "tokens_per_s", "eval_return", "eval_score")
# the cosine decay ends at this share of train.lr: the floor of the DT paper's Atari trainer (minGPT's),
# which clips its cosine there where this one is scaled to reach it at the last step
LR_FLOOR = 0.1
# train keys that do not change what is learnt: left out of the resume fingerprint and of dvc.yaml's params
NOT_IN_RESULTS = ("device", "log_every")


class TrainParams(Params):
    """The `train` section of params.yaml, with the `model` section inside."""

    section = "train"
    model: ModelParams
    batch_size: Annotated[int, Field(ge=1)]  # global: split over the processes under torchrun
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    warmup_steps: Annotated[int, Field(ge=0)]
    lr_decay: Literal["none", "cosine"]  # after warm-up: constant, or a cosine down to LR_FLOOR of lr at the last step
    steps: Annotated[int, Field(ge=1)]
    grad_clip: Annotated[float, Field(gt=0)]
    return_scale: Annotated[float, Field(gt=0)]
    amp: bool | Literal["auto"]  # auto: bf16 autocast on GPUs and CPUs with native bf16, else float32
    compile: bool
    device: str
    log_every: Annotated[int, Field(ge=1)]
    checkpoint_every: Annotated[int, Field(ge=1)]
    eval_every: Annotated[int, Field(ge=1)]
    eval_episodes: Annotated[int, Field(ge=1)]
    eval_target: float | None  # null: the DT paper's high target for the dataset's env
    env_id: str | None  # null: data.dataset's env

    @classmethod
    def from_params(cls, params=PARAMS_FILE, dataset=None, **context) -> "TrainParams":
        return super().from_params(params, dataset, model=ModelParams.from_params(params), **context)

    def fingerprint(self, run: Run, data_sha256: str) -> str:
        """What a checkpoint must match to be resumed: everything that shapes the run, and the data."""
        fields = self.model_dump(exclude=set(NOT_IN_RESULTS))
        return hashlib.sha256(json.dumps([fields, run.name, data_sha256], sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)


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
    """The rows of reports/train/<run>.tsv; last.pt carries them too, so a resume never loses one."""

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


def train(params: TrainParams, run: Run, data_path, out_dir, log_path, metrics_path) -> dict:
    """Train one run of the study; write last.pt, best.pt, the log and the metrics (rank 0). Returns the metrics."""
    out_dir = Path(out_dir)

    # -- the speed switches, all in one place ------------------------------------------------------------
    device = pick_device(params.device)  # cuda if present ('auto'), else cpu
    torch.set_num_threads(torch_threads())  # the CPUs this process may really use, not the machine's cores
    ddp = Distributed.from_env(device)  # under torchrun: one process per GPU, the global batch split
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls
    amp_dtype = autocast_dtype(device, params.amp)  # bf16 autocast, fp16 where the GPU lacks bf16, or None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 needs loss scaling
    fused_adamw = device.type == "cuda"
    # ------------------------------------------------------------------------------------------------------

    if params.batch_size % ddp.world:
        raise DtreproError(f"train.batch_size={params.batch_size} does not split over {ddp.world} processes.")
    torch.manual_seed(run.seed + ddp.rank)
    data_sha256 = file_sha256(require_regular_file(data_path, "train's --data"))
    raw = read_d4rl(data_path)
    ref_min, ref_max, ref_source = reference_scores(raw.metadata, params.env_id)  # the data's own, else D4RL's
    data = Trajectories.from_d4rl(raw, params.return_scale, MAX_TIMESTEP, device)
    del raw
    check_data_fits_env(data, params.env_id, data_path)
    sampler = WindowSampler(data, run.context_len, params.batch_size // ddp.world, run.seed + ddp.rank)
    model_cfg = ModelConfig(
        **params.model.model_dump(),
        state_dim=data.states.shape[1],
        act_dim=data.actions.shape[1],
        context_len=run.context_len,
    )
    model = DecisionTransformer(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=fused_adamw)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, params))

    checkpoints = Checkpoints(out_dir, params.fingerprint(run, data_sha256), ddp)
    state = checkpoints.resume(model, optimizer, scheduler, scaler, sampler)
    step, best_return = state["step"], state["best_return"]
    log = TrainLog(log_path, state["log"])

    net = torch.nn.parallel.DistributedDataParallel(model) if ddp.world > 1 else model
    net = torch.compile(net) if params.compile else net
    autocast = torch.autocast(device.type, amp_dtype) if amp_dtype else contextlib.nullcontext()

    def snapshot(with_state: bool) -> dict:
        ckpt = {
            "model": model.state_dict(),
            "config": model_cfg.to_dict(),
            "state_mean": torch.as_tensor(data.state_mean),
            "state_std": torch.as_tensor(data.state_std),
            "return_scale": params.return_scale,
            "step": step,
            "env_id": params.env_id,
            "ref_scores": {"ref_min_score": ref_min, "ref_max_score": ref_max, "ref_scores_source": ref_source},
            "train_seed": run.seed,
            "fingerprint": checkpoints.fingerprint,
        }
        if with_state:
            ckpt.update(
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                rng_torch=torch.get_rng_state(),
                rng_samplers=checkpoints.gather(sampler.generator.get_state()),
                best_return=best_return,
                log=log.rows,
            )
        return ckpt

    model.train()
    bar = tqdm(total=params.steps, initial=step, desc="train", unit="step", disable=not ddp.main, mininterval=1.0)
    started, first_step = time.perf_counter(), step
    window_start, window_steps, running = time.perf_counter(), 0, torch.zeros((), device=device)
    while step < params.steps:
        batch = sampler.sample()
        with autocast:
            pred = net(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"], batch["mask"])
        loss = action_loss(pred, batch["actions"], batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        running += loss.detach()
        step, window_steps = step + 1, window_steps + 1
        bar.update(1)

        row = {}
        if step % params.log_every == 0 or step == params.steps:
            mean_loss = (running / window_steps).item()  # the only sync with the device between evaluations
            if not math.isfinite(mean_loss):
                raise DtreproError(
                    f"Training {run.name} diverged: the loss became {mean_loss} between steps {step - window_steps} "
                    f"and {step}. Check the data (repair refuses values beyond repair.max_abs_*), lower train.lr, "
                    f"or set train.amp: false. Nothing after step {checkpoints.saved_step} was written."
                )
            samples = window_steps * params.batch_size / (time.perf_counter() - window_start)
            row = {
                "step": step,
                "loss": mean_loss,
                "lr": scheduler.get_last_lr()[0],
                "samples_per_s": samples,
                "tokens_per_s": samples * 3 * run.context_len,
            }
            bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{samples:,.0f}", refresh=False)
            window_start, window_steps, running = time.perf_counter(), 0, torch.zeros((), device=device)
        if ddp.main and (step % params.eval_every == 0 or step == params.steps):
            ret = evaluate_policy(model, data, params, run.seed)
            row.update(
                step=step, eval_return=ret, eval_score=float(normalized_score(ret, params.env_id, (ref_min, ref_max)))
            )
            if ret > best_return:
                best_return = ret
                checkpoints.save("best.pt", snapshot(with_state=False))
        if row and ddp.main:
            log.append(row)
        if step % params.checkpoint_every == 0 or step == params.steps:
            checkpoints.save("last.pt", snapshot(with_state=True))  # every rank joins the gather inside
    bar.close()
    seconds = time.perf_counter() - started
    if ddp.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if not ddp.main:
        return {}
    log.write()
    best = max(log.evaluations, key=lambda r: r["eval_return"], default={})
    losses = [r["loss"] for r in log.rows if r.get("loss") is not None]
    metrics = {
        "steps": step,
        "final_loss": losses[-1] if losses else None,
        "best_step": best.get("step"),
        "best_eval_return": best.get("eval_return"),
        "best_eval_score": best.get("eval_score"),
        "steps_per_s_this_run": (step - first_step) / seconds if step > first_step else None,
        "processes": ddp.world,
        "device": device.type,
        "ref_scores_source": ref_source,  # what eval_score is normalised with: d4rl, or the data's own (minari)
    }
    write_json(metrics_path, metrics)
    return metrics


class Checkpoints:
    """last.pt (the resume point) and best.pt of one run, in its folder."""

    def __init__(self, folder: Path, fingerprint: str, ddp: Distributed):
        self.folder, self.fingerprint, self.ddp = folder, fingerprint, ddp
        self.saved_step = 0

    def gather(self, sampler_state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's sampler RNG state (all ranks must call it), for rank 0 to save."""
        states = [sampler_state] * self.ddp.world
        if self.ddp.world > 1:
            dist.all_gather_object(states, sampler_state)
        return states

    def save(self, name: str, ckpt: dict) -> None:
        if not self.ddp.main:
            return
        with atomic_output(self.folder / name) as tmp:
            torch.save(ckpt, tmp)
        if name == "last.pt":
            self.saved_step = ckpt["step"]

    def _say(self, text: str) -> None:
        if self.ddp.main:
            print(f"train: {text}", flush=True)

    def resume(self, model, optimizer, scheduler, scaler, sampler) -> dict:
        """Load last.pt into the training state if it is this run's; what the loop starts from."""
        fresh = {"step": 0, "best_return": -math.inf, "log": []}
        path = self.folder / "last.pt"
        if not path.exists():
            return fresh
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except DAMAGED as err:
            self._say(f"{path} cannot be read ({type(err).__name__}); it is damaged or cut short: starting afresh")
            return fresh
        if ckpt.get("fingerprint") != self.fingerprint or "log" not in ckpt:
            self._say(f"{path} is from other params or data; starting afresh")
            return fresh
        if math.isfinite(ckpt["best_return"]) and not (self.folder / "best.pt").exists():
            self._say(f"{path} is complete up to step {ckpt['step']} but best.pt is missing; starting afresh")
            return fresh
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng_torch"])
        sampler.generator.set_state(ckpt["rng_samplers"][self.ddp.rank])
        self.saved_step = int(ckpt["step"])
        self._say(f"resuming from {path} at step {self.saved_step}")
        return {"step": self.saved_step, "best_return": float(ckpt["best_return"]), "log": ckpt["log"]}
