"""Episodes of a flat D4RL-layout file: where they end, and their length and return statistics."""

from __future__ import annotations

import numpy as np


def episode_ends(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Rows that end an episode; the last row always does (a trailing episode cut by the file's end)."""
    ends = np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool))
    if len(ends) == 0 or ends[-1] != len(terminals) - 1:
        ends = np.append(ends, len(terminals) - 1)
    return ends


def episode_stats(rewards: np.ndarray, end_rows: np.ndarray, prefix: str = "episode") -> dict[str, float]:
    """Length and return statistics (mean, std, min, max) over the episodes that end at `end_rows`."""
    starts = np.concatenate(([0], end_rows[:-1] + 1))
    lengths = end_rows - starts + 1
    returns = np.add.reduceat(np.asarray(rewards, np.float64), starts)
    stats = {}
    for name, values in ((f"{prefix}_length", lengths), (f"{prefix}_return", returns)):
        stats.update(
            {
                f"{name}_mean": float(values.mean()),
                f"{name}_std": float(values.std()),
                f"{name}_min": float(values.min()),
                f"{name}_max": float(values.max()),
            }
        )
    return stats
