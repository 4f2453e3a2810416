"""Find where the episodes of a flat D4RL dataset end, from its flags and from the data itself.

D4RL files mark an episode's last row with `terminals` (the env terminated) or
`timeouts` (the time limit truncated it). Old v0 copies have no `timeouts`, so
episodes cut by the 1000-step limit run into the next one unmarked, and the
last episode of a file is usually cut by the file's end with neither flag.

A row starts an episode, whatever the flags say, when
- `next_observations` of the row before differs from its observation, or
- its state looks like a reset (height near `reset_height`, every other
  coordinate and velocity within `reset_noise` of zero) and the row before
  cannot lead to it physically: one MuJoCo step of `dt` seconds moves each
  position by about dt times the mean of the two velocities, give or take
  dt times their change, and a reset breaks that by far more than `continuity_tolerance`.
Positions and velocities come from `infos/qpos` and `infos/qvel` where present,
otherwise from the observation (gym-mujoco locomotion observations are
qpos[1:] followed by qvel; velocities clipped at `velocity_clip` are skipped).
An episode still longer than `max_episode_steps` is split at the limit. Every
unflagged end becomes a timeout: the data do not say the env terminated there.

Everything is vectorised over rows; a million rows take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtrepro.params import BoundaryRules

METHODS = ("terminal_flag", "timeout_flag", "next_observations", "reset_state", "time_limit", "file_end")


@dataclass
class Boundaries:
    """The repaired end flags and how each episode end was found."""

    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    method: np.ndarray  # (N,) int8: index into METHODS at episode ends, -1 elsewhere
    reset_like: int  # rows whose state looks like a reset
    lone_discontinuities: int  # physical jumps to a state that is not a reset (left unsplit, reported)

    @property
    def ends(self) -> np.ndarray:
        return np.flatnonzero(self.method >= 0)

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.method[self.method >= 0], minlength=len(METHODS))
        return {name: int(found[i]) for i, name in enumerate(METHODS)}


def looks_like_reset(observations: np.ndarray, rules: BoundaryRules) -> np.ndarray:
    """Rows whose observation lies within the reset distribution (height, then every other coordinate)."""
    tol = rules.reset_noise * (1 + 1e-3) + 1e-6  # float32 rounding of a value drawn up to the bound
    height_ok = np.abs(observations[:, 0] - rules.reset_height) <= tol
    rest_ok = (np.abs(observations[:, 1:]) <= tol).all(axis=1)
    return height_ok & rest_ok


def positions_and_velocities(observations: np.ndarray, qpos: np.ndarray | None, qvel: np.ndarray | None):
    """Matching (positions, velocities) columns: from infos when present, else split from the observation."""
    if qpos is not None and qvel is not None and qpos.shape[1] == qvel.shape[1]:
        return qpos.astype(np.float64), qvel.astype(np.float64)
    n_pos = (observations.shape[1] - 1) // 2  # obs = qpos[1:] (nq - 1) then qvel (nq)
    pos = observations[:, :n_pos].astype(np.float64)
    vel = observations[:, n_pos + 1 :].astype(np.float64)  # qvel[1:] pairs with qpos[1:]
    return pos, vel


def discontinuous(positions: np.ndarray, velocities: np.ndarray, rules: BoundaryRules) -> np.ndarray:
    """(N-1,) bool: True where row i+1 cannot follow row i in one step of the simulator."""
    dp = np.diff(positions, axis=0)
    dv = np.diff(velocities, axis=0)
    mean_v = 0.5 * (velocities[1:] + velocities[:-1])
    residual = np.abs(dp - rules.dt * mean_v) - rules.dt * np.abs(dv)
    clipped = (np.abs(velocities[1:]) >= rules.velocity_clip) | (np.abs(velocities[:-1]) >= rules.velocity_clip)
    residual[clipped] = 0.0
    return (residual > rules.continuity_tolerance).any(axis=1)


def split_long_episodes(end_mask: np.ndarray, limit: int) -> np.ndarray:
    """Rows at which episodes longer than `limit` rows must end, counting `limit` rows from each start."""
    n = len(end_mask)
    ends = np.flatnonzero(end_mask)
    if len(ends) == 0 or ends[-1] != n - 1:
        ends = np.append(ends, n - 1)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    extra = (lengths - 1) // limit  # number of cuts inside each episode
    if not extra.any():
        return np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(starts)), extra)
    nth = np.arange(len(owner)) - np.repeat(np.cumsum(extra) - extra, extra) + 1
    return starts[owner] + nth * limit - 1


def find_boundaries(
    observations: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray | None,
    rules: BoundaryRules,
    next_observations: np.ndarray | None = None,
    qpos: np.ndarray | None = None,
    qvel: np.ndarray | None = None,
) -> Boundaries:
    """Repair the episode ends of one flat dataset; see the module docstring for the rules."""
    n = len(observations)
    terminals = np.asarray(terminals, dtype=bool)
    timeouts = np.zeros(n, dtype=bool) if timeouts is None else np.asarray(timeouts, dtype=bool)
    method = np.full(n, -1, dtype=np.int8)

    reset = looks_like_reset(observations, rules)
    pos, vel = positions_and_velocities(observations, qpos, qvel)
    jump = discontinuous(pos, vel, rules)  # jump[i]: between rows i and i+1
    cut_by_reset = np.zeros(n, dtype=bool)
    cut_by_reset[:-1] = reset[1:] & jump
    cut_by_next_obs = np.zeros(n, dtype=bool)
    if next_observations is not None:
        cut_by_next_obs[:-1] = (next_observations[:-1] != observations[1:]).any(axis=1)

    # Priority: a flag the file carries, then the exact next_observations test, then physics.
    for name, mask in (
        ("reset_state", cut_by_reset),
        ("next_observations", cut_by_next_obs),
        ("timeout_flag", timeouts),
        ("terminal_flag", terminals),
    ):
        method[mask] = METHODS.index(name)
    split = split_long_episodes(method >= 0, rules.max_episode_steps)
    method[split] = METHODS.index("time_limit")
    if method[-1] < 0:
        method[-1] = METHODS.index("file_end")

    new_terminals = terminals.copy()
    new_timeouts = (method >= 0) & ~new_terminals  # one flag per end; a terminal wins over a timeout
    lone = int((jump & ~reset[1:]).sum())
    return Boundaries(new_terminals, new_timeouts, method, int(reset.sum()), lone)
