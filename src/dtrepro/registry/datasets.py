"""The dataset registry: what a dataset's name says, and everything the pipeline needs to know about it.

`study.datasets` lists datasets by name. A D4RL gym-mujoco name (`<env>-<kind>-<version>`, e.g.
`walker2d-medium-replay-v2`) is downloaded: it names a file under D4RL's folder, with its published
size and SHA-256 (d4rl_files.tsv). A name `collected-<env>-<kind>` (e.g.
`collected-walker2d-medium-replay`) is made here, offline, by the collect source, the way D4RL made
that kind (or, for the kind `mixed`, which D4RL has not, from policies of several score bands). A
Minari id (`<namespace>/<env>/<name>-v<N>`, e.g. `mujoco/hopper/medium-v0`) is loaded with the
`minari` package: its data are not D4RL's, so its scores are not comparable with the paper's, and
it is trained and evaluated on the `-v5` env Minari's MuJoCo datasets record. Either
way the env picks a family, which gives the gymnasium env to train and evaluate
on (`-v4` by default, the closest to the `-v2` envs D4RL collected on; `data.env_version: v5` for
gymnasium's newer ones), the Decision Transformer paper's target returns plus the low target of
the conditioning study, the physical facts that repair finds episode boundaries with, and D4RL's
normalisation constants. Each params key that holds one of these facts is null in params.yaml,
meaning "the dataset's"; a value there overrides it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from dtrepro.runtime.errors import DtreproError


@dataclass(frozen=True)
class EnvFamily:
    gym_name: str  # gymnasium's name, without the version
    targets: tuple[float, float, float]  # DT paper's two targets (Chen et al., 2021, App. A), then the low one
    reset_height: float  # observation 0 (the torso's height) in a reset state
    reset_noise: float  # every other reset coordinate lies within this of zero
    dt: float  # seconds per env step: frame_skip x the model's timestep
    continuity_tolerance: float  # largest position jump within an episode beyond what the velocities explain
    alive_bonus: float  # the reward the env pays every step it is alive (ARS trains on rewards less this)
    ref_scores: tuple[float, float]  # D4RL's random and expert returns (d4rl/infos.py)


# The low target is about 1/9 of the paper's high one (Hopper: 400 of 3600), the conditioning study's.
# Continuity tolerances: within an episode of random actions, the largest jump (from infos/qpos, qvel) was
# 0.0026 (Hopper), 0.034 (Walker2d) and 0.47 (HalfCheetah, whose 0.05 s steps integrate more); between
# episodes the smallest was 0.14, 0.76 and 2.5.
FAMILIES = {
    "hopper": EnvFamily("Hopper", (3600.0, 1800.0, 400.0), 1.25, 0.005, 0.008, 0.005, 1.0, (-20.272305, 3234.3)),
    "walker2d": EnvFamily("Walker2d", (5000.0, 2500.0, 556.0), 1.25, 0.005, 0.008, 0.1, 1.0, (1.629008, 4592.3)),
    # HalfCheetah never terminates and pays no alive bonus; its torso starts at height 0, its positions within
    # 0.1 of zero and its velocities normal with std 0.1: 0.5 holds every coordinate of a reset (5 std)
    "halfcheetah": EnvFamily(
        "HalfCheetah", (12000.0, 6000.0, 1333.0), 0.0, 0.5, 0.05, 1.0, 0.0, (-280.178953, 12135.0)
    ),
}
ENV_VERSIONS = ("v4", "v5")
TIME_LIMIT = 1000  # steps: the time limit of the three envs, so the longest episode of D4RL's files and ours
ENV_IDS = tuple(f"{f.gym_name}-{v}" for f in FAMILIES.values() for v in ENV_VERSIONS)  # the envs a run may name


def family(name: str) -> EnvFamily:
    """The family of a dataset name (`hopper-medium-v2`, `collected-hopper-medium`) or an env id (`Hopper-v4`)."""
    if MINARI_SEP in name:
        return FAMILIES[lookup(name).env]
    parts = name.split("-")
    key = (parts[1] if parts[0] == COLLECTED and len(parts) > 1 else parts[0]).lower()
    if key not in FAMILIES:
        raise DtreproError(
            f"{name!r} names no env the pipeline knows: dataset names start with one of {sorted(FAMILIES)} "
            f"(e.g. hopper-medium-v2, collected-hopper-medium), env ids with their gymnasium names (e.g. Hopper-v4)."
        )
    return FAMILIES[key]


def env_id(dataset: str, version: str) -> str:
    """The gymnasium env a dataset's policies are trained and evaluated on, e.g. `Walker2d-v4`: `version`, or
    for a Minari id the version Minari's MuJoCo datasets were collected on."""
    if MINARI_SEP in dataset:
        return f"{family(lookup(dataset).env).gym_name}-{MINARI_ENV_VERSION}"
    return f"{family(dataset).gym_name}-{version}"


D4RL_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")  # D4RL's
COLLECTED_KINDS = (*KINDS, "mixed")  # made here: D4RL's, and mixed (policies of several score bands)
D4RL_VERSIONS = ("v0", "v1", "v2")
COLLECTED = "collected"  # the first word of the name of a dataset made here
MINARI_SEP = "/"  # Minari ids are paths: <namespace>/<env>/<name>-v<N>
MINARI_ID = re.compile(
    r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*/(?P<env>[a-z0-9]+)/(?P<name>[A-Za-z0-9_-]+)-(?P<version>v[0-9]+)"
)
MINARI_ENV_VERSION = "v5"  # the gymnasium version Minari's MuJoCo datasets were collected on


@dataclass(frozen=True)
class DatasetFile:
    """Where a D4RL dataset lives under D4RL's folder, and its published size and SHA-256 (None if unknown)."""

    path: str
    bytes: int | None
    sha256: str | None

    @property
    def url(self) -> str:
        return f"{D4RL_BASE_URL}/{self.path}"


@functools.cache
def published_files() -> dict[str, tuple[int, str]]:
    """path -> (bytes, SHA-256) of every D4RL gym-mujoco file whose hash is public (d4rl_files.tsv)."""
    rows = Path(__file__).with_name("d4rl_files.tsv").read_text().splitlines()
    table = [r.split("\t") for r in rows if r and not r.startswith("#")][1:]
    return {path: (int(size), digest) for path, size, digest in table}


@dataclass(frozen=True)
class Dataset:
    """A dataset by its name: where it comes from (`source`: download or collect), its env and its kind."""

    name: str
    source: str  # how the source stage gets it: download (D4RL's file), collect (made here) or minari
    env: str  # the family's key: hopper, walker2d, halfcheetah
    kind: str  # one of KINDS, or COLLECTED_KINDS when collected (for a Minari id, its name: medium, simple, ...)
    version: str | None  # the dataset's version (D4RL's v0, v1, v2; Minari's v0, ...); None for a collected one

    @property
    def family(self) -> EnvFamily:
        return FAMILIES[self.env]

    @property
    def file(self) -> DatasetFile:
        """D4RL's file of this dataset.

        v0 files live in `gym_mujoco/` with D4RL's old names (medium-replay was called `mixed`, and
        walker2d's was `walker_mixed`); v1 and v2 files live in `gym_mujoco_v1/` and `gym_mujoco_v2/` as
        `<env>_<kind>-<version>.hdf5`.
        """
        env, kind = self.env, self.kind
        if self.version == "v0":
            stem = kind.replace("-", "_")
            if kind == "medium-replay":
                stem = "mixed"
                env = "walker" if env == "walker2d" else env
            path = f"gym_mujoco/{env}_{stem}.hdf5"
        else:
            path = f"gym_mujoco_{self.version}/{env}_{kind.replace('-', '_')}-{self.version}.hdf5"
        size, digest = published_files().get(path, (None, None))
        return DatasetFile(path, size, digest)


def lookup(name: str) -> Dataset:
    """Parse a dataset name; one paragraph listing the names there are if it is none of them."""
    minari_id = MINARI_ID.fullmatch(str(name))
    if minari_id and minari_id["env"] in FAMILIES:
        return Dataset(name, "minari", minari_id["env"], minari_id["name"], minari_id["version"])
    parts = str(name).split("-")
    if parts[0] == COLLECTED:
        env, kind, version = (parts[1] if len(parts) > 1 else ""), "-".join(parts[2:]), None
    else:
        env, kind, version = parts[0], "-".join(parts[1:-1]), parts[-1]
    if (
        env in FAMILIES
        and kind in (COLLECTED_KINDS if version is None else KINDS)
        and version in (None, *D4RL_VERSIONS)
    ):
        return Dataset(name, "collect" if version is None else "download", env, kind, version)
    raise DtreproError(
        f"Unknown dataset name {name!r} in study.datasets. D4RL's are <env>-<kind>-<version> with env in "
        f"{list(FAMILIES)}, kind in {list(KINDS)} and version in {list(D4RL_VERSIONS)}, e.g. 'hopper-medium-v2'; "
        f"datasets made here offline are {COLLECTED}-<env>-<kind> with kind in {list(COLLECTED_KINDS)}, e.g. "
        f"'{COLLECTED}-walker2d-medium-replay'; "
        f"Minari's are <namespace>/<env>/<name>-v<N>, e.g. 'mujoco/hopper/medium-v0'. "
        f"To use any other file in D4RL's layout, name the D4RL dataset it stands for and set data.url to it."
    )


def dataset_file(name: str) -> DatasetFile:
    """D4RL's file of a D4RL dataset name such as `hopper-medium-v2`."""
    return lookup(name).file


# What a null params key stands for: key -> its value for (dataset name, env version).
FACTS = {
    "env_id": env_id,
    "targets": lambda d, v: list(family(d).targets),
    "eval_target": lambda d, v: family(d).targets[0],
    "reset_height": lambda d, v: family(d).reset_height,
    "reset_noise": lambda d, v: family(d).reset_noise,
    "dt": lambda d, v: family(d).dt,
    "continuity_tolerance": lambda d, v: family(d).continuity_tolerance,
    "reward_shift": lambda d, v: family(d).alive_bonus,
}


PUBLISHED_SOURCES = {"dt_paper": "DT paper", "corl_last": "CORL last", "corl_best": "CORL best"}  # column: label


def _published() -> dict[str, tuple[tuple[float, float], ...]]:
    """dataset -> ((mean, std) per source of PUBLISHED_SOURCES), from published_scores.tsv."""
    rows = Path(__file__).with_name("published_scores.tsv").read_text().splitlines()
    header, *table = [r.split("\t") for r in rows if r and not r.startswith("#")]
    if header[1::2] != list(PUBLISHED_SOURCES):
        raise AssertionError(f"published_scores.tsv's sources {header[1::2]} are not {list(PUBLISHED_SOURCES)}")
    return {name: tuple((float(m), float(sd)) for m, sd in zip(v[::2], v[1::2], strict=True)) for name, *v in table}


PUBLISHED = _published()  # the published scores to read ours against, by dataset name
LARGE_BATCH = {  # the large-batch variant (embed 512, batch 4096, 2,500 steps; 20 episodes), hopper-medium only
    "hopper-medium-v2": "80.6 ± 25.9; targets 3600 / 1800 / 400: 80.6 / 55.4 / 26.7; K = 20 / 1: 80.6 / 31.2",
}


def published_text(dataset: str) -> tuple[str, str, str] | None:
    """The published (paper, CORL last, CORL best) scores of a dataset as printed, or None."""
    if dataset not in PUBLISHED:
        return None
    (pm, ps), *corl = PUBLISHED[dataset]
    return (f"{pm:.1f} ± {ps:.1f}", *(f"{m:.2f} ± {s:.2f}" for m, s in corl))


def published(dataset: str) -> str:
    """One sentence of the published scores to read ours against, or why there are none."""
    if dataset.startswith(f"{COLLECTED}-"):
        return f"{dataset} was made here by the collect source: nobody has published scores on it"
    if MINARI_SEP in dataset:
        return (
            f"{dataset} is a Minari dataset, other data than D4RL's: its scores are not comparable with the "
            f"Decision Transformer paper's or CORL's D4RL numbers"
        )
    if dataset not in PUBLISHED:
        return (
            f"no published Decision Transformer scores for {dataset} (the papers report the medium, "
            f"medium-replay and medium-expert v2 sets)"
        )
    paper, last, best = published_text(dataset)
    text = (
        f"{dataset}: Decision Transformer paper (Chen et al., 2021, Table 2, 3 seeds) {paper}; "
        f"CORL (4 seeds x 100 episodes) last {last}, best {best}"
    )
    if dataset in LARGE_BATCH:
        text += f"; large-batch variant {LARGE_BATCH[dataset]}"
    return text
