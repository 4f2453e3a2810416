"""The offline source: a behaviour policy trained into a score band, rolled out into a D4RL-layout file."""

from __future__ import annotations

import importlib.metadata
import json

import h5py
import numpy as np
import pytest

from dtrepro.collect.ars import LinearPolicy
from dtrepro.collect.collector import collect, collect_to_files, train_behaviour
from dtrepro.data.d4rl import read_d4rl
from dtrepro.data.flags import episode_ends, episode_stats
from dtrepro.data.repair import repair_file
from dtrepro.params import CollectParams, RepairParams
from dtrepro.registry.scores import normalized_score
from dtrepro.runtime.errors import DtreproError
from dtrepro.runtime.threads import blas_core, cpu_model, usable_cpus

from helpers import COLLECTED, params

# Seconds: training must raise the score from about 11 (the untrained policy) into the band.
TINY_VALUES = {"steps": 4000, "band_low": 14, "band_high": 100, "max_steps": 300_000, "eval_episodes": 2}
TINY = CollectParams.from_params(params(collect=TINY_VALUES), COLLECTED)
RESTART = 40_000  # env steps: too few for ARS runs 0-2 of TINY's seed to train into its band, enough for run 3


def collect_into(tmp_path, params, name="raw"):
    paths = (tmp_path / f"{name}.hdf5", tmp_path / f"{name}-policy.json", tmp_path / f"{name}-metrics.json")
    result = collect_to_files(params, *paths)
    return result, paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return collect_into(tmp_path_factory.mktemp("collect"), TINY)


@pytest.mark.slow
def test_training_reaches_the_band_and_metrics_say_so(tiny):
    result, (raw, policy_path, metrics_path) = tiny
    metrics = json.loads(metrics_path.read_text())
    assert TINY.band_low <= metrics["medium_normalized_mean"] <= TINY.band_high
    assert metrics["medium_iterations"] > 0 and metrics["medium_env_steps"] > 0
    assert metrics["rows"] == TINY.steps
    assert metrics["dataset_episodes"] > 1 and metrics["dataset_episode_return_mean"] > 0
    assert result["rollout_steps_per_s"] > 0
    assert np.isclose(metrics["medium_normalized_mean"], normalized_score(metrics["medium_return_mean"], "Hopper-v4"))
    assert metrics["medium_normalized_std"] <= TINY.max_spread
    # provenance: what made these bytes besides the params
    assert metrics["sha256"] == result["sha256"] == (raw.parent / f"{raw.name}.sha256").read_text().split()[0]
    assert metrics["workers"] == usable_cpus() and metrics["cpu"] == cpu_model()
    assert metrics["blas_core"] == blas_core() and metrics["version/mujoco"] == importlib.metadata.version("mujoco")


@pytest.mark.slow
def test_collected_file_passes_repair_unchanged(tiny, tmp_path):
    _, (raw, _, _) = tiny
    report = repair_file(
        raw, tmp_path / "clean.hdf5", tmp_path / "repair.json", RepairParams.from_params(params(), COLLECTED)
    )
    assert report["rows_changed_timeouts_added"] == report["rows_changed_timeouts_removed"] == 0
    assert report["rows_changed_actions_clipped"] == 0 and report["rows_dropped"] == 0
    assert report["boundaries_reset_state"] == report["boundaries_next_observations"] == 0
    before, after = read_d4rl(raw), read_d4rl(tmp_path / "clean.hdf5")
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "infos/qpos"):
        np.testing.assert_array_equal(before.arrays[key], after.arrays[key])


@pytest.mark.slow
def test_file_has_d4rl_layout_metadata_and_true_log_probs(tiny):
    _, (raw, policy_path, _) = tiny
    with h5py.File(raw, "r") as f:
        meta = dict(f["metadata"].attrs)
        assert {"infos/qpos", "infos/qvel", "infos/action_log_probs", "timeouts", "next_observations"} <= {
            name for name in f if isinstance(f[name], h5py.Dataset)
        } | {f"infos/{k}" for k in f["infos"]}
    assert meta["source"] == "collect" and meta["env_id"] == "Hopper-v4" and meta["seed"] == 0
    assert meta["algorithm"].startswith("ARS") and "version/mujoco" in meta and "version/gymnasium" in meta
    data = read_d4rl(raw)
    policy = LinearPolicy.from_dict(json.loads(policy_path.read_text())["policies"]["medium"])
    obs, actions, logp = data.arrays["observations"], data.arrays["actions"], data.arrays["infos/action_log_probs"]
    mean = np.clip(np.array([policy.act(o) for o in obs.astype(np.float64)]), -1, 1)
    inside = (np.abs(actions) < 1).all(axis=1)  # the noise sample is only recoverable where nothing was clipped
    eps = (actions[inside] - mean[inside]) / TINY.action_noise
    expected = np.sum(-np.log(TINY.action_noise) - 0.5 * np.log(2 * np.pi) - 0.5 * eps**2, axis=1)
    np.testing.assert_allclose(logp[inside], expected, atol=2e-3)
    assert inside.mean() > 0.2


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path):
    result, _ = tiny
    again, (raw, _, _) = collect_into(tmp_path, TINY, "again")
    assert again["sha256"] == result["sha256"]
    assert (tmp_path / "again.hdf5.sha256").read_text().split()[0] == result["sha256"]
    other, _ = collect_into(tmp_path, TINY.model_copy(update={"seed": 1}), "other")
    assert other["sha256"] != result["sha256"]


@pytest.mark.slow
def test_v0_layout_repairs_to_exactly_the_v2_boundaries(tiny, tmp_path):
    _, (raw, _, _) = tiny
    _, (raw_v0, _, _) = collect_into(tmp_path, TINY.model_copy(update={"layout": "v0"}), "v0")
    with h5py.File(raw_v0, "r") as f:
        assert "timeouts" not in f and "infos" not in f
    v2 = repair_file(
        raw, tmp_path / "v2-clean.hdf5", tmp_path / "v2.json", RepairParams.from_params(params(), COLLECTED)
    )
    v0 = repair_file(
        raw_v0, tmp_path / "v0-clean.hdf5", tmp_path / "v0.json", RepairParams.from_params(params(), COLLECTED)
    )
    a, b = read_d4rl(tmp_path / "v2-clean.hdf5").arrays, read_d4rl(tmp_path / "v0-clean.hdf5").arrays
    np.testing.assert_array_equal(a["terminals"], b["terminals"])
    np.testing.assert_array_equal(a["timeouts"], b["timeouts"])
    np.testing.assert_array_equal(a["observations"], b["observations"])
    assert v0["episodes"] == v2["episodes"] and v0["boundaries_timeout_flag"] == 0


def test_unreachable_band_is_an_error_not_a_weak_policy(tmp_path):
    hard = CollectParams.from_params(params(collect={**TINY_VALUES, "band_low": 95, "max_steps": 20_000}), COLLECTED)
    with pytest.raises(
        DtreproError,
        match=r"did not reach the score band \[95, 100\] \(nearest: [\d.]+ ± [\d.]+\) within collect.max_steps=20000 "
        r"environment steps on Hopper-v4 \(\d+ ARS iterations in 1 run\(s\) of at most collect.restart_steps=",
    ):
        collect_into(tmp_path, hard)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"layout": "v3"}, "collect.layout is 'v3'"),
        ({"band_low": 70, "band_high": 60}, "do not make a band"),
        ({"seeds": 1}, "collect.seeds is not a parameter"),
        ({"action_noise": 0}, "collect.action_noise is 0"),
    ],
)
def test_bad_collect_params(bad, message):
    with pytest.raises(DtreproError, match=message):
        CollectParams.from_params({**params(), "collect": {**params()["collect"], **bad}}, COLLECTED)


def kind(name: str, **values) -> CollectParams:
    return CollectParams.from_params(params(collect={**TINY_VALUES, **values}), name)


@pytest.mark.slow
def test_medium_replay_is_every_training_episode_up_to_the_medium_stop(tmp_path):
    """D4RL's replay recipe: the episodes ARS ran while it trained, up to the medium policy, as they happened."""
    replay = kind("collected-hopper-medium-replay")
    _, (raw, _, metrics_path) = collect_into(tmp_path, replay)
    metrics = json.loads(metrics_path.read_text())
    data = read_d4rl(raw).arrays
    assert metrics["rows"] == metrics["medium_env_steps"] == len(data["rewards"])  # every env step ARS took
    assert replay.band_low <= metrics["medium_normalized_mean"] <= replay.band_high
    ends = data["terminals"] | data["timeouts"]
    assert (
        ends[-1] and metrics["dataset_episodes"] == ends.sum() == 2 * replay.directions * metrics["medium_iterations"]
    )
    inside = ~ends[:-1]  # within an episode each row's next observation is the next row's observation
    np.testing.assert_array_equal(data["next_observations"][:-1][inside], data["observations"][1:][inside])
    report = repair_file(
        raw, tmp_path / "clean.hdf5", tmp_path / "r.json", RepairParams.from_params(params(), COLLECTED)
    )
    assert report["rows_changed_timeouts_added"] == report["lone_discontinuities"] == 0


@pytest.mark.slow
def test_medium_expert_is_the_medium_rollouts_then_the_expert_ones(tmp_path):
    mixed = kind("collected-hopper-medium-expert", steps=2000, expert_band_low=25, expert_band_high=1000)
    _, (raw, policy_path, metrics_path) = collect_into(tmp_path, mixed)
    metrics = json.loads(metrics_path.read_text())
    assert metrics["rows"] == 2 * mixed.steps
    assert mixed.band_low <= metrics["medium_normalized_mean"] <= mixed.band_high
    assert metrics["expert_normalized_mean"] >= mixed.expert_band_low
    assert metrics["expert_env_steps"] > metrics["medium_env_steps"]  # trained on from the medium policy
    assert set(json.loads(policy_path.read_text())["policies"]) == {"medium", "expert"}
    data = read_d4rl(raw).arrays
    halves = [slice(0, mixed.steps), slice(mixed.steps, None)]
    returns = [
        episode_stats(data["rewards"][h], episode_ends(data["terminals"][h], data["timeouts"][h]))[
            "episode_return_mean"
        ]
        for h in halves
    ]
    assert returns[1] > returns[0]  # the expert half's episodes earn more


@pytest.mark.slow
def test_mixed_is_one_policy_per_band_met_in_any_order_each_rolled_out(tmp_path):
    """The kind mixed (not D4RL's): `steps` rows of each policy, the first ARS meets in each band, in the
    bands' order whatever order ARS met them in: here the band listed first is met second."""
    bands = [[14, 1000], [11, 13]]
    mixed = kind("collected-hopper-mixed", steps=2000, mixed_bands=bands)
    _, (raw, policy_path, metrics_path) = collect_into(tmp_path, mixed)
    metrics = json.loads(metrics_path.read_text())
    assert metrics["rows"] == 2 * mixed.steps and metrics["kind"] == "mixed"
    for i, (low, high) in enumerate(bands, 1):
        assert low <= metrics[f"policy{i}_normalized_mean"] <= high
        assert metrics[f"policy{i}_normalized_std"] <= mixed.max_spread
    assert metrics["policy1_env_steps"] > metrics["policy2_env_steps"]  # the higher band, met later
    assert metrics["policy1_ars_run"] == metrics["policy2_ars_run"] == 0  # both met by the first ARS run
    assert set(json.loads(policy_path.read_text())["policies"]) == {"policy1", "policy2"}
    data = read_d4rl(raw)
    assert data.metadata["kind"] == "mixed" and data.rows == 2 * mixed.steps
    halves = [slice(0, mixed.steps), slice(mixed.steps, None)]
    returns = [data.arrays["rewards"][h].sum() for h in halves]
    assert returns[0] > returns[1]  # the first half is the first band's, better, policy


@pytest.mark.slow  # two ARS searches
def test_a_band_takes_only_a_policy_whose_episodes_agree():
    """A policy whose mean lies in the band but whose evaluation episodes' scores spread by more than
    collect.max_spread is passed over for a later, steadier one."""
    loose = TINY.model_copy(update={"max_spread": 1000.0, "eval_episodes": 3})
    first = train_behaviour(loose, [(TINY.band_low, TINY.band_high)])[0]
    spread = float(normalized_score(first.returns, "Hopper-v4").std())
    assert spread > 0
    strict = loose.model_copy(update={"max_spread": spread / 2})
    steady = train_behaviour(strict, [(TINY.band_low, TINY.band_high)])[0]
    assert normalized_score(steady.returns, "Hopper-v4").std() <= spread / 2
    assert steady.env_steps > first.env_steps
    assert TINY.band_low <= normalized_score(steady.returns, "Hopper-v4").mean() <= TINY.band_high


@pytest.mark.slow
def test_a_stuck_search_starts_afresh_and_keeps_the_bands_it_filled():
    """An ARS run that has not filled every band after collect.restart_steps starts from scratch (seeded from
    (seed, run)); the bands filled before stay, the steps of every run count, and the replay buffer is the
    finding run's alone. Here runs 0 to 2 take more than RESTART steps to reach TINY's band and run 3 fewer,
    while the first run passes through [1.5, 1.8] in its first iteration. Fails if a restart forgot a filled
    band, continued the stuck run, reset the step count, or kept the earlier runs' episodes in the record."""
    short = TINY.model_copy(update={"restart_steps": RESTART})
    bands = [(TINY.band_low, TINY.band_high), (1.5, 1.8)]
    record: list = []
    trained, early = train_behaviour(short, bands, record)
    assert early.run == 0 and trained.run == 3  # the first run's band kept, the other met by a fresh run
    assert trained.env_steps >= 3 * RESTART  # each earlier run took at least restart_steps
    for b, (low, high) in zip((trained, early), bands, strict=True):
        assert low <= normalized_score(b.returns, "Hopper-v4").mean() <= high
    # the record: the finding run's episodes up to its policy, not every run's since the start
    assert 0 < sum(len(e["rewards"]) for e in record) <= trained.env_steps - 3 * RESTART


@pytest.mark.slow
@pytest.mark.parametrize(
    "dataset, values",
    [
        ("collected-hopper-mixed", {"steps": 1500, "mixed_bands": [[11, 13], [14, 1000]]}),
        ("collected-hopper-medium-replay", {}),
        ("collected-hopper-random", {"steps": 1500}),
    ],
)
def test_one_worker_or_two_make_the_same_data(dataset, values):
    """Episodes and rollouts run in worker processes, one per core: each is fixed by its seed, so the data and
    the policies are the same whether one process made them or two."""
    chosen = kind(dataset, **values)
    (one, found_one, _), (two, found_two, _) = collect(chosen, workers=1), collect(chosen, workers=2)
    assert one.rows > 0 and one.arrays.keys() == two.arrays.keys()
    for key in one.arrays:
        np.testing.assert_array_equal(one.arrays[key], two.arrays[key], err_msg=key)
    assert found_one.keys() == found_two.keys()
    for name in found_one:
        np.testing.assert_array_equal(found_one[name].policy.weights, found_two[name].policy.weights)
        assert found_one[name].env_steps == found_two[name].env_steps


@pytest.mark.parametrize(
    "bands, message",
    [([], "mixed_bands is empty"), ([[60, 50]], r"\[60.0, 50.0\] is not a band"), ([[1, 2, 3]], "mixed_bands.0")],
)
def test_bad_mixed_bands(bands, message):
    with pytest.raises(DtreproError, match=message):
        kind("collected-hopper-mixed", mixed_bands=bands)


def test_mixed_is_made_here_only():
    with pytest.raises(DtreproError, match="Unknown dataset name 'hopper-mixed-v2'"):
        kind("hopper-mixed-v2")


def test_random_is_uniform_random_actions(tmp_path):
    random = kind("collected-walker2d-random", steps=1500)
    _, (raw, _, metrics_path) = collect_into(tmp_path, random)
    data = read_d4rl(raw)
    assert data.rows == 1500 and data.arrays["observations"].shape[1] == 17  # Walker2d-v4's
    assert data.metadata["env_id"] == "Walker2d-v4" and data.metadata["kind"] == "random"
    assert abs(data.arrays["actions"].mean()) < 0.05 and data.arrays["actions"].std() == pytest.approx(0.577, abs=0.02)


def test_a_d4rl_name_is_not_collected():
    with pytest.raises(DtreproError, match="is not a dataset made here"):
        CollectParams.from_params(params(), "hopper-medium-v2")
