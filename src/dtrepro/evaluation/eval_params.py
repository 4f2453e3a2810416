"""What an evaluation is: the `eval` params, the checkpoints it runs and the keys of its results.

The evaluate stage writes results under these names and the report reads them back.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from dtrepro.params import Params

EPISODE_FIELDS = ("checkpoint", "step", "target", "episode", "seed", "return", "length", "normalized_score")


class EvalParams(Params):
    """The `eval` section of params.yaml."""

    section = "eval"
    env_id: str | None  # null: the dataset's env (datasets.py)
    episodes: Annotated[int, Field(ge=1)]
    seed: Annotated[int, Field(ge=0)]
    targets: Annotated[list[float], Field(min_length=1)] | None  # null: the DT paper's for the dataset's env
    max_steps: Annotated[int, Field(ge=1)]
    device: str
    amp: bool | Literal["auto"]  # auto: bf16 autocast on GPUs and CPUs with native bf16, else float32
    bootstrap_resamples: Annotated[int, Field(ge=100)]

    @property
    def episode_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


def metric_key(checkpoint: str, target: float, field: str) -> str:
    """The flat metrics key of one evaluation's field, e.g. `last.target_3600.normalized_score_mean`."""
    return f"{checkpoint}.target_{target:g}.{field}"
