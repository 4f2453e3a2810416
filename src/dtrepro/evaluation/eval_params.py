"""What an evaluation is: the `eval` params, the checkpoints it runs and the keys of its results.

The evaluate stage writes results under these names and the report reads them back.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from dtrepro.params import DeviceName, EnvId, Params, Seed

MAX_EPISODES = 1000  # per checkpoint and target
MAX_TARGET = 1e5  # the largest return asked for: above every locomotion env's best (HalfCheetah's ~12,000)
# checkpoint_md5: the scored file's MD5, the hash dvc.lock records for it, so that each row names what it scored
EPISODE_FIELDS = (
    "checkpoint", "checkpoint_md5", "step", "target", "episode", "seed", "return", "length", "normalized_score"
)  # fmt: skip


class EvalParams(Params):
    """The `eval` section of params.yaml."""

    section = "eval"
    env_id: EnvId  # null: the dataset's env (registry/datasets.py)
    episodes: Annotated[int, Field(ge=1, le=MAX_EPISODES)]
    seed: Seed  # episode i is reset with seed + i
    targets: Annotated[list[float], Field(min_length=1)] | None  # null: the DT paper's for the dataset's env
    max_steps: Annotated[int, Field(ge=1)]
    device: DeviceName
    amp: bool | Literal["auto"]  # auto: bf16 autocast on GPUs and CPUs with native bf16, else float32
    bootstrap_resamples: Annotated[int, Field(ge=100, le=100_000)]  # memory: resamples x episodes numbers

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, targets: list[float] | None) -> list[float] | None:
        """Each target a return the envs can give, with a metrics key of its own."""
        for t in targets or ():
            if not abs(t) <= MAX_TARGET:
                raise ValueError(f"a target must be a return within ±{MAX_TARGET:g}, not {t:g}")
        keys = [metric_key("last", t, "") for t in targets or ()]
        if len(set(keys)) < len(keys):
            raise ValueError(
                "targets must differ, each with a metrics key of its own (a repeated target would pool the same "
                "episodes twice; targets closer than six significant digits share a key)"
            )
        return targets

    @property
    def episode_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


def metric_key(checkpoint: str, target: float, field: str) -> str:
    """The flat metrics key of one evaluation's field, e.g. `last.target_3600.normalized_score_mean`."""
    return f"{checkpoint}.target_{target:g}.{field}"
