"""Turn a raw D4RL-layout file (v0, v1 or v2) into a clean one, and say exactly what changed.

The clean file keeps every row and every dataset of the raw one. Its
`terminals`/`timeouts` mark each episode's last row with exactly one flag
(see `dtrepro.data.boundaries`), actions a rounding error outside their bounds
are clipped, and the report counts every row changed and why.
"""

from __future__ import annotations

import os

import numpy as np

from dtrepro import __version__
from dtrepro.data.boundaries import METHODS, find_boundaries
from dtrepro.data.checksum import file_sha256
from dtrepro.data.d4rl import D4RLData, read_d4rl, write_d4rl
from dtrepro.data.flags import episode_stats
from dtrepro.params import RepairParams
from dtrepro.runtime.atomic import atomic_output, write_json
from dtrepro.runtime.errors import DtreproError


def check_magnitudes(data: D4RLData, params: RepairParams, path: str | os.PathLike) -> None:
    """Refuse finite values far beyond any env's scale (1e30 rewards, 3e38 states): they train to NaN."""
    bounds = {
        "observations": ("max_abs_observation", params.max_abs_observation),
        "next_observations": ("max_abs_observation", params.max_abs_observation),
        "rewards": ("max_abs_reward", params.max_abs_reward),
    }
    for key, (param, bound) in bounds.items():
        if key not in data.arrays:
            continue
        values = np.abs(data.arrays[key].astype(np.float64))
        beyond = values > bound
        if beyond.any():
            rows = np.unique(np.nonzero(beyond)[0])
            raise DtreproError(
                f"{path}: '{key}' holds {int(beyond.sum())} value(s) beyond ±{bound:g} (repair.{param}) in "
                f"{len(rows)} row(s), the largest {values.max():.4g}, first at row {int(rows[0])}. No locomotion "
                f"env produces such values; the file is damaged or not what data.dataset names. If the values "
                f"are real, raise repair.{param}."
            )


def clip_actions(actions: np.ndarray, params: RepairParams, path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Clip actions within `action_tolerance` of the bounds; refuse a file with actions further out."""
    low, high = params.action_low, params.action_high
    outside = (actions < low) | (actions > high)
    if not outside.any():
        return actions, 0
    excess = np.maximum(low - actions, actions - high).max()
    if excess > params.action_tolerance:
        rows = np.flatnonzero(outside.any(axis=1))
        raise DtreproError(
            f"{path}: {len(rows)} row(s) have actions outside the bounds [{low}, {high}] by up to "
            f"{excess:.4g} (first at row {int(rows[0])}), more than repair.action_tolerance="
            f"{params.action_tolerance}. The file is probably from another env or not normalised; "
            f"check data.dataset / data.url, or set repair.action_low/high to the env's bounds."
        )
    return np.clip(actions, low, high).astype(actions.dtype), int(outside.any(axis=1).sum())


def repair_dataset(raw: D4RLData, params: RepairParams, path: str | os.PathLike = "<memory>") -> tuple[D4RLData, dict]:
    """Return the clean dataset and the report (flat keys) for a raw one."""
    a = raw.arrays
    n = raw.rows
    check_magnitudes(raw, params, path)
    actions, actions_clipped = clip_actions(a["actions"], params, path)
    found = find_boundaries(
        a["observations"],
        a["terminals"],
        a.get("timeouts"),
        params,
        next_observations=a.get("next_observations"),
        qpos=a.get("infos/qpos"),
        qvel=a.get("infos/qvel"),
    )
    old_timeouts = a["timeouts"] if raw.has_timeouts else np.zeros(n, dtype=bool)
    clean = D4RLData(
        {**a, "actions": actions, "terminals": found.terminals, "timeouts": found.timeouts},
        {**raw.metadata, "repair/version": __version__, **{f"repair/{k}": v for k, v in params.model_dump().items()}},
    )
    ends = found.ends
    trailing = found.method[-1] == METHODS.index("file_end")
    report = {
        **{f"rules.{k}": getattr(params, k) for k in ("dt", "reset_height", "reset_noise", "continuity_tolerance")},
        "rows": n,
        "episodes": len(ends),
        "layout": "v1+" if raw.has_timeouts else "v0 (no timeouts)",
        **{f"boundaries_{k}": v for k, v in found.counts().items()},
        "rows_changed_timeouts_added": int((found.timeouts & ~old_timeouts).sum()),
        "rows_changed_timeouts_removed": int((old_timeouts & ~found.timeouts).sum()),
        "rows_changed_actions_clipped": actions_clipped,
        "rows_dropped": n - clean.rows,
        "reset_like_rows": found.reset_like,
        "lone_discontinuities": found.lone_discontinuities,
        "trailing_episode_cut": bool(trailing),
        "trailing_episode_length": int(ends[-1] - (ends[-2] if len(ends) > 1 else -1)) if trailing else 0,
        **episode_stats(a["rewards"], ends),
    }
    return clean, report


def repair_file(
    input_path: str | os.PathLike, output_path: str | os.PathLike, report_path: str | os.PathLike, params: RepairParams
) -> dict:
    """Read, repair and write: the clean HDF5 and the JSON report appear together or not at all."""
    raw = read_d4rl(input_path)
    clean, report = repair_dataset(raw, params, input_path)
    report = {"input_sha256": file_sha256(input_path), **report}
    with atomic_output(output_path) as tmp:
        write_d4rl(tmp, clean)
        write_json(report_path, report)
    return report
