"""Benchmark: repair of a 1,000,000-row Hopper-like v0 file (target: <= 10 s on a 2-core machine).

The file is the tests' real Hopper-v4 dataset (standing, falling and randomly
acting controllers, episodes cut at odd lengths) repeated to a million rows, written
without `timeouts` so that every unflagged boundary has to be found from the
data. The reference is the same boundary rule written as a per-row Python
loop, the way D4RL-era scripts walk a dataset.
"""

from __future__ import annotations

from dtrepro.runtime.stage import setup

setup()  # the stages' threads and BLAS kernels, before numpy and torch load

import tempfile
import time
from pathlib import Path

import numpy as np

from dtrepro.data.boundaries import find_boundaries
from dtrepro.data.d4rl import write_d4rl
from dtrepro.data.repair import repair_file
from dtrepro.params import BoundaryRules, RepairParams

from common import HOPPER, ROOT, hopper_like

RULES = RepairParams.from_params(ROOT / "params.yaml", HOPPER)

ROWS = 1_000_000
TARGET_S = 10.0


def python_loop_reference(obs: np.ndarray, terminals: np.ndarray, rules: BoundaryRules) -> np.ndarray:
    """The reset-state + continuity rule, one row at a time."""
    ends = []
    n_pos = (obs.shape[1] - 1) // 2
    tol = rules.reset_noise * (1 + 1e-3) + 1e-6
    for i in range(len(obs) - 1):
        if terminals[i]:
            ends.append(i)
            continue
        nxt = obs[i + 1]
        if abs(nxt[0] - rules.reset_height) > tol or max(abs(x) for x in nxt[1:]) > tol:
            continue
        p0, p1 = obs[i, :n_pos], nxt[:n_pos]
        v0, v1 = obs[i, n_pos + 1 :], nxt[n_pos + 1 :]
        for j in range(n_pos):
            if abs(v0[j]) >= rules.velocity_clip or abs(v1[j]) >= rules.velocity_clip:
                continue
            r = abs(p1[j] - p0[j] - rules.dt * 0.5 * (v0[j] + v1[j])) - rules.dt * abs(v1[j] - v0[j])
            if r > rules.continuity_tolerance:
                ends.append(i)
                break
    ends.append(len(obs) - 1)
    return np.array(ends)


def main() -> None:
    t0 = time.perf_counter()
    data, truth = hopper_like(ROWS)
    print(f"made {ROWS:,} Hopper-like rows in {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.hdf5"
        write_d4rl(raw, data)
        t0 = time.perf_counter()
        report = repair_file(
            raw,
            Path(tmp) / "clean.hdf5",
            Path(tmp) / "repair.json",
            RepairParams.from_params(ROOT / "params.yaml", HOPPER),
        )
        total = time.perf_counter() - t0
    print(
        f"repair_file (read + validate + boundaries + write + report): {total:.2f} s for {ROWS:,} rows "
        f"-> {'OK' if total <= TARGET_S else 'OVER'} against the {TARGET_S:.0f} s target"
    )
    print(
        f"episodes found: {report['episodes']:,} of {int(truth.sum()):,} true ones; "
        f"by reset state {report['boundaries_reset_state']:,}, terminal flag {report['boundaries_terminal_flag']:,}"
    )

    rules = RULES
    obs, term = data.arrays["observations"], data.arrays["terminals"]
    t0 = time.perf_counter()
    found = find_boundaries(obs, term, None, rules)
    vec = time.perf_counter() - t0
    assert np.array_equal(found.ends, np.flatnonzero(truth)), "repair missed or invented a boundary"
    n_ref = 200_000
    t0 = time.perf_counter()
    ref_ends = python_loop_reference(obs[:n_ref], term[:n_ref], rules)
    ref = (time.perf_counter() - t0) * ROWS / n_ref
    vec_ends = np.flatnonzero(find_boundaries(obs[:n_ref], term[:n_ref], None, rules).method >= 0)
    assert np.array_equal(ref_ends, vec_ends), "the reference and the vectorised rule disagree"
    print(
        f"boundary detection alone: vectorised {vec:.3f} s vs Python loop {ref:.1f} s "
        f"(timed on {n_ref:,} rows, scaled) -> {ref / vec:.0f}x; {len(found.ends):,} ends"
    )


if __name__ == "__main__":
    main()
