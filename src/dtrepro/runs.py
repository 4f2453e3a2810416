"""The study: one trained model per (context length, seed), and the name each run's files carry.

params.yaml's `study` section lists the context lengths and the training seeds;
dvc.yaml's `train` and `evaluate` stages are matrices over the same two lists,
and name each run's outputs `k<K>-seed<S>` as `Run.name` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from dtrepro.params import Params


@dataclass(frozen=True)
class Run:
    context_len: int
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.context_len}-seed{self.seed}"


class StudyParams(Params):
    """The `study` section: `context_lens` x `seeds`; the first context length is the headline model's."""

    section = "study"
    context_lens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_repeats(self):
        for key in ("context_lens", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists a value twice: {values}")
        return self

    @property
    def runs(self) -> list[Run]:
        return [Run(k, s) for k in self.context_lens for s in self.seeds]


def add_run_arguments(parser) -> None:
    """`--context-len` and `--seed`: which run of the study a stage script works on."""
    parser.add_argument("--context-len", type=int, required=True, help="the run's K, timesteps per window")
    parser.add_argument("--seed", type=int, required=True, help="the run's training seed")
