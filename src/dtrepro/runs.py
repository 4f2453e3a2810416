"""The study: one trained model per (context length, seed), and where each one's files live.

params.yaml's `study` section lists the context lengths and the training seeds;
dvc.yaml's `train` and `evaluate` stages are matrices over the same two lists and
name their outputs the way `Run` does, so the stage scripts, the report and DVC
agree on every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dtrepro.errors import DtreproError
from dtrepro.params import section


@dataclass(frozen=True)
class Run:
    context_len: int
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.context_len}-seed{self.seed}"

    @property
    def checkpoint_dir(self) -> Path:
        return Path("models") / self.name

    @property
    def train_log(self) -> Path:
        return Path("reports/train") / f"{self.name}.tsv"

    @property
    def train_metrics(self) -> Path:
        return Path("reports/train") / f"{self.name}.json"

    @property
    def eval_metrics(self) -> Path:
        return Path("reports/eval") / f"{self.name}.json"

    @property
    def eval_episodes(self) -> Path:
        return Path("reports/eval") / f"{self.name}.csv"


@dataclass(frozen=True)
class Study:
    """`study.context_lens` x `study.seeds`; the first context length is the headline model's."""

    context_lens: tuple[int, ...]
    seeds: tuple[int, ...]

    @classmethod
    def from_section(cls, section: dict) -> "Study":
        unknown = set(section) - {"context_lens", "seeds"}
        if unknown:
            raise DtreproError(f"Unknown study param(s) {sorted(unknown)} in params.yaml; known: context_lens, seeds.")
        values = {}
        for key in ("context_lens", "seeds"):
            items = section.get(key)
            if not isinstance(items, list) or not items or not all(isinstance(v, int) for v in items):
                raise DtreproError(f"study.{key} must be a non-empty list of integers, e.g. [20, 1]; it is {items!r}.")
            if len(set(items)) != len(items):
                raise DtreproError(f"study.{key} lists a value twice: {items}.")
            values[key] = tuple(items)
        if min(values["context_lens"]) < 1:
            raise DtreproError(f"study.context_lens must be at least 1; it is {list(values['context_lens'])}.")
        return cls(**values)

    @property
    def runs(self) -> list[Run]:
        return [Run(k, s) for k in self.context_lens for s in self.seeds]

    @property
    def first(self) -> Run:
        return Run(self.context_lens[0], self.seeds[0])


def add_run_arguments(parser) -> None:
    """`--context-len` and `--seed`: which run of the study a stage script works on."""
    parser.add_argument(
        "--context-len", type=int, help="the run's K, timesteps per window (default: study.context_lens[0])"
    )
    parser.add_argument("--seed", type=int, help="the run's training seed (default: study.seeds[0])")


def run_from_arguments(args) -> Run:
    """The run that `--context-len` and `--seed` name; what they leave out is the study's first."""
    if args.context_len is not None and args.seed is not None:
        return Run(args.context_len, args.seed)
    first = Study.from_section(section(args.params, "study")).first
    return Run(
        first.context_len if args.context_len is None else args.context_len,
        first.seed if args.seed is None else args.seed,
    )
