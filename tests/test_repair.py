"""Boundary repair on real Hopper-v4 data: every layout D4RL shipped, and every way an episode can end."""

from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest

from dtrepro.collect.rollout import rollout
from dtrepro.data.boundaries import find_boundaries, split_long_episodes
from dtrepro.data.d4rl import D4RLData, as_v0_layout, read_d4rl
from dtrepro.data.repair import repair_dataset, repair_file
from dtrepro.params import RepairParams
from dtrepro.runtime.errors import DtreproError

from helpers import HOPPER, params
from support.hopper import pd_policy, without_timeouts_at

REPAIR = RepairParams.from_params(params(), HOPPER)


def ends(terminals, timeouts):
    return np.flatnonzero(np.asarray(terminals) | np.asarray(timeouts))


def assert_exact(clean: D4RLData, terminals, timeouts):
    np.testing.assert_array_equal(ends(clean.arrays["terminals"], clean.arrays["timeouts"]), ends(terminals, timeouts))
    np.testing.assert_array_equal(clean.arrays["terminals"], terminals)
    np.testing.assert_array_equal(clean.arrays["timeouts"], timeouts)
    assert not (clean.arrays["terminals"] & clean.arrays["timeouts"]).any()


def test_v2_layout_keeps_flags_and_marks_only_the_cut_ends(hopper):
    data, terminals, timeouts = hopper
    clean, report = repair_dataset(data, REPAIR)
    assert_exact(clean, terminals, timeouts)
    flagged = int((data.arrays["terminals"] | data.arrays["timeouts"]).sum())
    assert report["boundaries_terminal_flag"] + report["boundaries_timeout_flag"] == flagged
    assert report["boundaries_terminal_flag"] > 0 and report["boundaries_timeout_flag"] > 0
    # the pieces were joined without flags: found exactly by next_observations, plus the file's end
    assert report["boundaries_next_observations"] == 3
    assert report["boundaries_file_end"] == 1
    assert report["rows_changed_timeouts_added"] == 4
    assert report["episodes"] == len(ends(terminals, timeouts))
    assert report["rows_dropped"] == 0 and report["lone_discontinuities"] == 0


def test_v0_copy_recovers_exactly_the_v2_boundaries(hopper):
    data, terminals, timeouts = hopper
    v0 = as_v0_layout(data)
    assert set(v0.arrays) == {"observations", "actions", "rewards", "terminals"}
    clean, report = repair_dataset(v0, REPAIR)
    assert_exact(clean, terminals, timeouts)
    assert report["layout"].startswith("v0")
    assert report["boundaries_timeout_flag"] == 0
    assert report["boundaries_reset_state"] == int(timeouts.sum()) - 1  # all but the file's end
    assert report["boundaries_time_limit"] == 0


def test_unflagged_cuts_at_odd_lengths_found_from_qpos_continuity(hopper):
    data, terminals, timeouts = hopper
    arrays = {k: v for k, v in data.arrays.items() if k != "next_observations"}
    stripped = without_timeouts_at(D4RLData(arrays), np.flatnonzero(timeouts))
    clean, report = repair_dataset(stripped, REPAIR)
    assert_exact(clean, terminals, timeouts)
    lengths = np.diff(np.concatenate(([-1], ends(terminals, timeouts))))
    assert {53, 137, 411} <= set(lengths.tolist())  # odd cuts really are in the data


def test_terminal_and_timeout_on_one_row_keeps_the_terminal(hopper):
    data, terminals, _ = hopper
    arrays = dict(data.arrays)
    arrays["timeouts"] = data.arrays["timeouts"] | data.arrays["terminals"]
    clean, report = repair_dataset(D4RLData(arrays), REPAIR)
    np.testing.assert_array_equal(clean.arrays["terminals"], terminals)
    assert not (clean.arrays["terminals"] & clean.arrays["timeouts"]).any()
    assert report["rows_changed_timeouts_removed"] == int(terminals.sum())


def test_episode_longer_than_the_limit_is_split_not_merged():
    data = rollout("Hopper-v4", pd_policy(5), 1000, seed=5, max_episode_steps=1000)
    assert data.arrays["timeouts"][-1] and data.arrays["timeouts"].sum() == 1
    clean, report = repair_dataset(
        as_v0_layout(data), RepairParams.from_params(params(repair={"max_episode_steps": 300}), HOPPER)
    )
    np.testing.assert_array_equal(ends(clean.arrays["terminals"], clean.arrays["timeouts"]), [299, 599, 899, 999])
    assert report["boundaries_time_limit"] == 3 and report["boundaries_file_end"] == 1
    assert report["episode_length_max"] == 300


def test_split_long_episodes_counts_the_limit_without_off_by_one():
    mask = np.zeros(2600, dtype=bool)
    mask[[999, 2599]] = True  # episodes of 1000 and 1600 rows
    np.testing.assert_array_equal(split_long_episodes(mask, 1000), [1999])
    mask[:] = False
    np.testing.assert_array_equal(split_long_episodes(mask, 1000), [999, 1999])
    assert len(split_long_episodes(np.zeros(1000, dtype=bool), 1000)) == 0


def test_reset_state_needs_a_physical_break():
    rules = REPAIR
    data = rollout("Hopper-v4", pd_policy(6), 40, seed=6, max_episode_steps=1000)
    obs = data.arrays["observations"]
    no_flags = np.zeros(len(obs), dtype=bool)
    found = find_boundaries(obs, no_flags, None, rules)
    assert found.counts()["reset_state"] == 0 and found.reset_like == 1  # only row 0
    # a state that jumps away and back is a lone discontinuity, not an episode start
    bent = obs.copy()
    bent[20, 1] += 0.3
    found = find_boundaries(bent, no_flags, None, rules)
    assert found.counts()["reset_state"] == 0 and found.lone_discontinuities == 2


def test_actions_within_tolerance_are_clipped_and_counted(hopper):
    data = hopper[0]
    arrays = dict(data.arrays)
    arrays["actions"] = data.arrays["actions"].copy()
    arrays["actions"][[5, 9], 0] = 1.0004
    clean, report = repair_dataset(D4RLData(arrays), REPAIR)
    assert report["rows_changed_actions_clipped"] == 2
    assert clean.arrays["actions"].max() <= 1.0


def test_actions_far_out_of_bounds_are_refused(hopper):
    arrays = dict(hopper[0].arrays)
    arrays["actions"] = hopper[0].arrays["actions"] * 3
    with pytest.raises(DtreproError, match="outside the bounds"):
        repair_dataset(D4RLData(arrays), REPAIR, "x.hdf5")


def test_repair_file_writes_d4rl_layout_and_report(hopper, hopper_file, tmp_path):
    out, report_path = tmp_path / "clean.hdf5", tmp_path / "reports" / "repair.json"
    report = repair_file(hopper_file, out, report_path, REPAIR)
    assert json.loads(report_path.read_text()) == report
    assert report["episodes"] == len(ends(hopper[1], hopper[2]))
    assert report["trailing_episode_cut"] and report["trailing_episode_length"] > 0
    with h5py.File(out, "r") as f:  # what any D4RL reader sees
        assert f["observations"].shape == (hopper[0].rows, 11) and f["observations"].dtype == np.float32
        assert f["terminals"].dtype == bool and f["timeouts"].dtype == bool
        assert f["infos/qpos"].shape == (hopper[0].rows, 6)
        assert f["metadata"].attrs["repair/max_episode_steps"] == 1000
    again = read_d4rl(out)
    assert_exact(again, hopper[1], hopper[2])


def test_repair_is_deterministic_to_the_byte(hopper_file, tmp_path):
    a, b = tmp_path / "a.hdf5", tmp_path / "b.hdf5"
    repair_file(hopper_file, a, tmp_path / "a.json", REPAIR)
    time.sleep(1.1)  # HDF5 stores object times at one-second resolution unless told not to
    repair_file(hopper_file, b, tmp_path / "b.json", REPAIR)
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_unknown_repair_param_is_an_error():
    section = {**params()["repair"], "max_episode_step": 1000}
    with pytest.raises(DtreproError, match="repair.max_episode_step is not a parameter"):
        RepairParams.from_params({**params(), "repair": section}, HOPPER)


@pytest.mark.parametrize(
    "dataset, env", [("walker2d-medium-v2", "Walker2d-v4"), ("halfcheetah-medium-v2", "HalfCheetah-v4")]
)
def test_each_env_is_repaired_with_its_own_facts(dataset, env):
    """Real rollouts of each env: with the rules of the dataset named, every boundary is a flag and no row inside
    an episode looks discontinuous; with Hopper's tolerance HalfCheetah's 0.05 s steps would."""
    rng = np.random.default_rng(0)
    data = rollout(env, lambda obs: rng.uniform(-1, 1, 6), 3000, seed=0, max_episode_steps=1000)
    rules = RepairParams.from_params(params(), dataset)
    assert rules.dt == {"Walker2d-v4": 0.008, "HalfCheetah-v4": 0.05}[env]
    clean, report = repair_dataset(data, rules)
    flagged = int((data.arrays["terminals"] | data.arrays["timeouts"]).sum())
    assert report["episodes"] == flagged and report["lone_discontinuities"] == 0
    assert report["rows_changed_timeouts_added"] == 0
    if env == "HalfCheetah-v4":
        assert data.arrays["terminals"].sum() == 0  # it never terminates: every episode ends on the time limit
        hopper_tolerance = params(repair={"continuity_tolerance": 0.005})
        assert (
            repair_dataset(data, RepairParams.from_params(hopper_tolerance, dataset))[1]["lone_discontinuities"] > 100
        )
