"""What a dataset's name says: the env it came from and everything the pipeline needs to know about it.

`data.dataset` (`<env>-<kind>-<version>`, e.g. `walker2d-medium-replay-v2`) picks an env family.
The family gives the gymnasium env to train and evaluate on (`-v4` by default, the closest to
the `-v2` envs D4RL collected on; `data.env_version: v5` for gymnasium's newer ones), the
Decision Transformer paper's target returns plus the low target of the conditioning study, the
physical facts that repair finds episode boundaries with, and D4RL's normalisation constants.
Each params key that holds one of these facts is null in params.yaml, meaning "the dataset's";
a value there overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtrepro.errors import DtreproError


@dataclass(frozen=True)
class EnvFamily:
    gym_name: str  # gymnasium's name, without the version
    targets: tuple[float, float, float]  # DT paper's two targets (Chen et al., 2021, App. A), then the low one
    reset_height: float  # observation 0 (the torso's height) in a reset state
    reset_noise: float  # every other reset coordinate lies within this of zero
    dt: float  # seconds per env step: frame_skip x the model's timestep
    continuity_tolerance: float  # largest position jump within an episode beyond what the velocities explain
    alive_bonus: float  # the reward the env pays every step it is alive (ARS trains on rewards less this)
    terminates: bool  # whether an episode can end before the time limit
    ref_scores: tuple[float, float]  # D4RL's random and expert returns (d4rl/infos.py)


# The low target is about 1/9 of the paper's high one (Hopper: 400 of 3600), the conditioning study's.
# Continuity tolerances: within an episode of random actions, the largest jump (from infos/qpos, qvel) was
# 0.0026 (Hopper), 0.034 (Walker2d) and 0.47 (HalfCheetah, whose 0.05 s steps integrate more); between
# episodes the smallest was 0.14, 0.76 and 2.5.
FAMILIES = {
    "hopper": EnvFamily("Hopper", (3600.0, 1800.0, 400.0), 1.25, 0.005, 0.008, 0.005, 1.0, True, (-20.272305, 3234.3)),
    "walker2d": EnvFamily("Walker2d", (5000.0, 2500.0, 556.0), 1.25, 0.005, 0.008, 0.1, 1.0, True, (1.629008, 4592.3)),
    # HalfCheetah never terminates and pays no alive bonus; its torso starts at height 0, its positions within
    # 0.1 of zero and its velocities normal with std 0.1: 0.5 holds every coordinate of a reset (5 std)
    "halfcheetah": EnvFamily(
        "HalfCheetah", (12000.0, 6000.0, 1333.0), 0.0, 0.5, 0.05, 1.0, 0.0, False, (-280.178953, 12135.0)
    ),
}
ENV_VERSIONS = ("v4", "v5")


def family(name: str) -> EnvFamily:
    """The family of a dataset name (`hopper-medium-v2`) or an env id (`Hopper-v4`)."""
    key = name.split("-")[0].lower()
    if key not in FAMILIES:
        raise DtreproError(
            f"{name!r} names no env the pipeline knows: dataset names start with one of {sorted(FAMILIES)} "
            f"(e.g. hopper-medium-v2), env ids with their gymnasium names (e.g. Hopper-v4)."
        )
    return FAMILIES[key]


def env_id(dataset: str, version: str) -> str:
    """The gymnasium env a dataset's policies are trained and evaluated on, e.g. `Walker2d-v4`."""
    return f"{family(dataset).gym_name}-{version}"


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


# D4RL-normalised scores published for the Decision Transformer: the paper's Table 2 (Chen et al., 2021,
# arXiv 2106.01345; 3 seeds) and CORL's README (Tarasov et al., 2022; 4 seeds x 100 episodes, the last and
# the best checkpoint). (paper, CORL last, CORL best) per dataset.
PUBLISHED = {
    "halfcheetah-medium-v2": ("42.6 ± 0.1", "42.20 ± 0.26", "42.73 ± 0.10"),
    "hopper-medium-v2": ("67.6 ± 1.0", "65.10 ± 1.61", "69.42 ± 3.64"),
    "walker2d-medium-v2": ("74.0 ± 1.4", "67.63 ± 2.54", "74.70 ± 0.56"),
    "halfcheetah-medium-replay-v2": ("36.6 ± 0.8", "38.91 ± 0.50", "40.31 ± 0.28"),
    "hopper-medium-replay-v2": ("82.7 ± 7.0", "81.77 ± 6.87", "88.74 ± 3.02"),
    "walker2d-medium-replay-v2": ("66.6 ± 3.0", "59.86 ± 2.73", "68.22 ± 1.20"),
    "halfcheetah-medium-expert-v2": ("86.8 ± 1.3", "91.55 ± 0.95", "93.40 ± 0.21"),
    "hopper-medium-expert-v2": ("107.6 ± 1.8", "110.44 ± 0.33", "111.18 ± 0.21"),
    "walker2d-medium-expert-v2": ("108.1 ± 0.2", "107.11 ± 0.96", "108.71 ± 0.34"),
}
LARGE_BATCH = {  # the large-batch variant (embed 512, batch 4096, 2,500 steps; 20 episodes), hopper-medium only
    "hopper-medium-v2": "80.6 ± 25.9; targets 3600 / 1800 / 400: 80.6 / 55.4 / 26.7; K = 20 / 1: 80.6 / 31.2",
}


def published(dataset: str) -> str:
    """One sentence of the published scores to read ours against, or why there are none."""
    if dataset not in PUBLISHED:
        return (
            f"no published Decision Transformer scores for {dataset} (the papers report the medium, "
            f"medium-replay and medium-expert v2 sets)"
        )
    paper, last, best = PUBLISHED[dataset]
    text = (
        f"{dataset}: Decision Transformer paper (Chen et al., 2021, Table 2, 3 seeds) {paper}; "
        f"CORL (4 seeds x 100 episodes) last {last}, best {best}"
    )
    if dataset in LARGE_BATCH:
        text += f"; large-batch variant {LARGE_BATCH[dataset]}"
    return text
