"""Train a Decision Transformer on a clean D4RL file: one readable loop with its speed switches in view.

The dataset is loaded once onto the training device; batches come from
`WindowSampler` without leaving it. Switches: bf16 autocast where the device
supports it (fp16 with a grad scaler otherwise; `amp: false` turns it off),
`torch.compile` on request, TF32 and fused AdamW on CUDA. Every
`checkpoint_every` steps `last.pt` is written atomically with the optimizer,
scheduler and RNG states, so a run killed at any moment resumes from it and
ends where an uninterrupted run would. Every `eval_every` steps a few episodes
score the model, and the best so far is kept as `best.pt`. Under `torchrun`
the same loop runs as DDP with the global batch split over the ranks; rank 0
evaluates and writes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from dtrepro.atomic import atomic_output, write_json
from dtrepro.data.checksum import file_sha256
from dtrepro.data.d4rl import read_d4rl
from dtrepro.device import autocast_dtype, pick_device
from dtrepro.errors import DtreproError
from dtrepro.evaluate import Policy, run_episodes
from dtrepro.model import DecisionTransformer, ModelConfig, action_loss
from dtrepro.params import from_section
from dtrepro.sampler import Trajectories, WindowSampler
from dtrepro.scores import normalized_score

LOG_FIELDS = ("step", "loss", "lr", "samples_per_s", "tokens_per_s")


@dataclass(frozen=True)
class TrainConfig:
    """The `model` and `train` sections of params.yaml."""

    embed_dim: int = 128
    layers: int = 3
    heads: int = 1
    context_len: int = 20
    dropout: float = 0.1
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000
    steps: int = 100_000
    grad_clip: float = 0.25
    return_scale: float = 1000.0
    amp: bool = False
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    eval_every: int = 5000
    eval_episodes: int = 5
    eval_target: float = 3600.0
    env_id: str = "Hopper-v4"

    @classmethod
    def from_params(cls, model: dict, train: dict, context_len: int, seed: int) -> "TrainConfig":
        """The model and train sections for one run of the study (its context length and seed)."""
        for key, where in (("context_len", "model"), ("seed", "train")):
            if key in {"context_len": model, "seed": train}[key]:
                raise DtreproError(
                    f"{where}.{key} is not read: every run's {key} comes from the study section "
                    f"(study.{key}s lists them; one entry trains one model). Remove {where}.{key}."
                )
        cfg = from_section(cls, {**model, **train, "context_len": context_len, "seed": seed}, "model/train")
        if cfg.embed_dim % cfg.heads:
            raise DtreproError(f"model.embed_dim={cfg.embed_dim} must be a multiple of model.heads={cfg.heads}.")
        if cfg.steps < 1 or cfg.checkpoint_every < 1 or cfg.log_every < 1 or cfg.eval_every < 1:
            raise DtreproError("train.steps, log_every, checkpoint_every and eval_every must be positive.")
        return cfg

    def fingerprint(self, data_sha256: str) -> str:
        """What a checkpoint must match to be resumed: everything that shapes the run, and the data."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("device", "log_every")}
        return hashlib.sha256(json.dumps([fields, data_sha256], sort_keys=True).encode()).hexdigest()[:16]


def warmup_lambda(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / max(1, warmup_steps))


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


class Trainer:
    def __init__(
        self, cfg: TrainConfig, data_path: str | os.PathLike, out_dir: str | os.PathLike, log_path, data_sha256: str
    ):
        self.cfg, self.out_dir, self.log_path = cfg, Path(out_dir), Path(log_path)
        self.device = pick_device(cfg.device)
        self.dist = Distributed.from_env(self.device)
        if cfg.batch_size % self.dist.world:
            raise DtreproError(f"train.batch_size={cfg.batch_size} does not split over {self.dist.world} processes.")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.fingerprint = cfg.fingerprint(data_sha256)
        torch.manual_seed(cfg.seed + self.dist.rank)
        data = read_d4rl(data_path)
        self.data = Trajectories.from_d4rl(data, cfg.return_scale, ModelConfig.max_timestep, self.device)
        self.sampler = WindowSampler(
            self.data, cfg.context_len, cfg.batch_size // self.dist.world, cfg.seed + self.dist.rank
        )
        self.model_cfg = ModelConfig(
            state_dim=self.data.states.shape[1],
            act_dim=self.data.actions.shape[1],
            embed_dim=cfg.embed_dim,
            layers=cfg.layers,
            heads=cfg.heads,
            context_len=cfg.context_len,
            dropout=cfg.dropout,
        )
        self.model = DecisionTransformer(self.model_cfg).to(self.device)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_lambda(cfg.warmup_steps))
        self.amp_dtype = autocast_dtype(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step, self.best_return = 0, -math.inf
        self._resume()
        net = self.model
        if self.dist.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(net)
        self.net = torch.compile(net) if cfg.compile else net

    # -- checkpoints ---------------------------------------------------------------------------------
    def _checkpoint(self, with_state: bool) -> dict:
        ckpt = {
            "model": self.model.state_dict(),
            "config": self.model_cfg.to_dict(),
            "state_mean": torch.as_tensor(self.data.state_mean),
            "state_std": torch.as_tensor(self.data.state_std),
            "return_scale": self.cfg.return_scale,
            "step": self.step,
            "env_id": self.cfg.env_id,
            "train_seed": self.cfg.seed,
            "fingerprint": self.fingerprint,
        }
        if with_state:
            samplers = [None] * self.dist.world
            state = self.sampler.generator.get_state()
            if self.dist.world > 1:
                dist.all_gather_object(samplers, state)
            else:
                samplers = [state]
            ckpt.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                rng_torch=torch.get_rng_state(),
                rng_samplers=samplers,
                best_return=self.best_return,
            )
        return ckpt

    def _save(self, name: str, ckpt: dict) -> None:
        with atomic_output(self.out_dir / name) as tmp:
            torch.save(ckpt, tmp)

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.exists():
            return
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        if ckpt.get("fingerprint") != self.fingerprint:
            if self.dist.main:
                print(f"train: {path} is from other params or data; starting afresh")
            return
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng_torch"].cpu())
        self.sampler.generator.set_state(ckpt["rng_samplers"][self.dist.rank].cpu())
        self.step, self.best_return = int(ckpt["step"]), float(ckpt["best_return"])
        if self.dist.main:
            print(f"train: resuming from {path} at step {self.step}")

    # -- the loop ------------------------------------------------------------------------------------
    def train_step(self) -> torch.Tensor:
        b = self.sampler.sample()
        ctx = torch.autocast(self.device.type, self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        with ctx:
            pred = self.net(b["states"], b["actions"], b["returns_to_go"], b["timesteps"], b["mask"])
        loss = action_loss(pred, b["actions"], b["mask"])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def evaluate(self) -> float:
        policy = Policy(self.model, self.data.state_mean, self.data.state_std, self.cfg.return_scale)
        seeds = range(self.cfg.seed + 10_000, self.cfg.seed + 10_000 + self.cfg.eval_episodes)
        returns = run_episodes(policy, self.cfg.env_id, seeds, self.cfg.eval_target).returns
        self.model.train()
        return float(returns.mean())

    def run(self) -> dict:
        cfg, main = self.cfg, self.dist.main
        log_rows = self._read_log() if main else []
        evals = [r for r in log_rows if r.get("eval_return")]
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not main, mininterval=1.0)
        window_start, window_steps, running = time.perf_counter(), 0, torch.zeros((), device=self.device)
        started = time.perf_counter()
        first_step = self.step
        while self.step < cfg.steps:
            running += self.train_step()
            self.step += 1
            window_steps += 1
            bar.update(1)
            row = None
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                elapsed = time.perf_counter() - window_start
                samples = window_steps * cfg.batch_size / elapsed
                loss = (running / window_steps).item()
                row = {
                    "step": self.step,
                    "loss": loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "samples_per_s": samples,
                    "tokens_per_s": samples * 3 * cfg.context_len,
                }
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples:,.0f}", refresh=False)
                window_start, window_steps, running = time.perf_counter(), 0, torch.zeros((), device=self.device)
            if main and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                ret = self.evaluate()
                row = {
                    **(row or {"step": self.step}),
                    "eval_return": ret,
                    "eval_score": float(normalized_score(ret, cfg.env_id)),
                }
                evals.append(row)
                if ret > self.best_return:
                    self.best_return = ret
                    self._save("best.pt", self._checkpoint(with_state=False))
            if row is not None and main:
                log_rows.append(row)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                ckpt = self._checkpoint(with_state=True)  # every rank joins the gather
                if main:
                    self._write_log(log_rows)
                    self._save("last.pt", ckpt)
        bar.close()
        seconds = time.perf_counter() - started
        if self.dist.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        best = max(evals, key=lambda r: r["eval_return"]) if evals else {}
        return {
            "steps": self.step,
            "final_loss": log_rows[-1]["loss"] if log_rows and "loss" in log_rows[-1] else None,
            "best_step": best.get("step"),
            "best_eval_return": best.get("eval_return"),
            "best_eval_score": best.get("eval_score"),
            "steps_per_s_this_run": (self.step - first_step) / seconds if seconds > 0 else None,
            "processes": self.dist.world,
            "device": self.device.type,
        }

    def _read_log(self) -> list[dict]:
        if self.step == 0 or not self.log_path.exists():
            return []
        with open(self.log_path) as f:
            rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f, delimiter="\t")]
        return [r for r in rows if r["step"] <= self.step]

    def _write_log(self, rows: list[dict]) -> None:
        fields = LOG_FIELDS + ("eval_return", "eval_score")
        with atomic_output(self.log_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fields, delimiter="\t", restval="")
            writer.writeheader()
            writer.writerows(rows)


def train(cfg: TrainConfig, data_path, out_dir, log_path, metrics_path) -> dict:
    trainer = Trainer(cfg, data_path, out_dir, log_path, file_sha256(data_path))
    metrics = trainer.run()
    if not trainer.dist.main:
        return {}
    write_json(metrics_path, metrics)
    return metrics
