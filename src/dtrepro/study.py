"""The study: one trained model per (dataset, context length, seed), and the name each run's files carry.

params.yaml's `study` section lists the datasets, the context lengths and the training
seeds; dvc.yaml's stages are matrices over the same lists, and put each run's outputs in
the dataset's folders under the name `k<K>-seed<S>`, as `Run.name` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from dtrepro.params import Params, Seed, add_dataset_argument
from dtrepro.registry.datasets import lookup
from dtrepro.runtime.errors import DtreproError


@dataclass(frozen=True)
class Run:
    context_len: int
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.context_len}-seed{self.seed}"


class StudyParams(Params):
    """The `study` section: `datasets` x `context_lens` x `seeds`; the first context length is the headline's."""

    section = "study"
    datasets: Annotated[list[str], Field(min_length=1)]
    context_lens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]
    seeds: Annotated[list[Seed], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_repeats(self):
        for key in ("datasets", "context_lens", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists a value twice: {values}")
        for name in self.datasets:
            try:
                lookup(name)
            except DtreproError as err:
                raise ValueError(str(err)) from None
        return self

    @property
    def runs(self) -> list[Run]:
        return [Run(k, s) for k in self.context_lens for s in self.seeds]


SECTIONS = ("data", "collect", "repair", "study", "model", "train", "eval")  # params.yaml's, one per Params class


def check_params(study: StudyParams, params: Mapping) -> None:
    """What no one section can check: every section is one the stages read (a typo such as `trian:` would
    be ignored), and data.url and data.sha256, which stand for one D4RL file, have one D4RL dataset to apply to."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise DtreproError(
            f"params.yaml has the section '{unknown[0]}', which no stage reads (a typo?); its values would be ignored. "
            f"The sections are: {', '.join(SECTIONS)}."
        )
    downloads = [name for name in study.datasets if lookup(name).source == "download"]
    for key in ("url", "sha256"):
        if (params.get("data") or {}).get(key) and len(downloads) != 1:
            raise DtreproError(
                f"data.{key} is set, but study.datasets downloads {len(downloads)} D4RL datasets "
                f"({', '.join(downloads) or 'none: data.url applies to D4RL names only'}) and data.{key} stands "
                f"for one file. Study one D4RL dataset with data.{key}, or set data.{key}: null (and give the folder "
                f"of several in data.mirrors)."
            )


def add_run_arguments(parser) -> None:
    """`--dataset`, `--context-len` and `--seed`: which run of the study a stage script works on."""
    add_dataset_argument(parser)
    parser.add_argument("--context-len", type=int, required=True, help="the run's K, timesteps per window")
    parser.add_argument("--seed", type=int, required=True, help="the run's training seed")
