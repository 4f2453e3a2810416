"""Checkpointing and resume: the state an interrupted train stage goes on from, kept outside DVC's outputs.

DVC deletes a stage's outputs before it runs it, and restores them from its run-cache instead where the same
command, deps and params ran before; so the state a killed run resumes from is no output. It lives beside
them in a hidden, git-ignored folder, `<out-dir>/.resume/state.pt`, written atomically every
`train.checkpoint_every` steps: the weights (and their running average), the optimizer, scheduler,
grad-scaler and RNG states, the best checkpoint so far and the training log. Only the run it belongs to uses it:
its fingerprint covers the code of the stage's import closure, the data and every param that changes what is
learnt, so an edit to the training code, other data or other params start afresh. A complete state (every
step taken) writes the outputs again without training, as after `dvc repro -f`. The run's outputs, `last.pt`
and `best.pt` (`dtrepro.agent.checkpoint`), are written once, at the end, from what this run computed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from dtrepro.agent.checkpoint import DAMAGED, load_torch, save_torch

RESUME_DIR = ".resume"  # beside a run's outputs; .gitignore lists it


def resume_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / RESUME_DIR / "state.pt"


def fingerprint(params: dict, run_name: str, data_sha256: str, code_sha256: str) -> str:
    """What a resume state must match to be used: the params that shape the run, the run, the data, the code."""
    blob = json.dumps([params, run_name, data_sha256, code_sha256], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class ResumeState:
    """A run's training state at `step`, as every `train.checkpoint_every` steps saves it."""

    fingerprint: str
    step: int
    model: dict
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: list  # per rank: {"cpu": torch's CPU generator state, "cuda": its CUDA one or None}
    rng_sampler: object  # the window sampler's generator state (the same on every rank)
    best_return: float  # of the best periodic evaluation so far (-inf before the first)
    best: dict | None  # that evaluation's checkpoint (`Checkpoint` fields), None before
    log: list  # the training log's rows so far
    ema: dict | None  # the weights' running average (`AveragedModel` state) where train.ema_decay > 0, else None

    def save(self, path: str | Path) -> None:
        save_torch(asdict(self), path)

    @classmethod
    def load(cls, path: Path, key: str, say: Callable[[str], None]) -> "ResumeState | None":
        """The state at `path` if it is this run's (fingerprint `key`); None, said why, otherwise."""
        if not path.exists():
            return None
        try:
            content = load_torch(path)
        except DAMAGED as err:
            say(f"{path} cannot be read ({type(err).__name__}); it is damaged or cut short: starting afresh")
            return None
        names = [f.name for f in fields(cls)]
        if not isinstance(content, dict) or sorted(content) != sorted(names):
            say(f"{path} is not a resume state of this pipeline: starting afresh")
            return None
        if content["fingerprint"] != key:
            say(f"{path} is from other params, data or code: starting afresh")
            return None
        state = cls(**content)
        if not isinstance(state.best_return, float) or (math.isfinite(state.best_return) and state.best is None):
            say(f"{path} is not a resume state of this pipeline: starting afresh")
            return None
        return state
