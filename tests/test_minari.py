"""Minari in and out: a real Minari dataset (Minari's own DataCollector) through the pipeline, and the
pipeline's own data exported as a Minari dataset that `minari.load_dataset` opens."""

from __future__ import annotations

import json
import os
import sys

import gymnasium as gym
import numpy as np
import pytest
import yaml

from dtrepro.collect.collector import collect_to_files
from dtrepro.data.d4rl import read_d4rl
from dtrepro.data.flags import episode_ends
from dtrepro.data.minari_import import MINARI_PATH_VAR, export_file, load, minari_id, to_d4rl
from dtrepro.params import CollectParams, DownloadParams
from dtrepro.runtime.errors import DtreproError

from helpers import copy_repo, one_line, params, run

MINARI_ID = "test/hopper/noise-v0"


def record(dataset_id: str, episodes: int, max_steps: int, seed: int = 0):
    """A Minari dataset recorded with Minari's DataCollector on Hopper-v5: noisy actions, so that some episodes
    fall (terminated) and some reach the time limit (truncated)."""
    import minari

    env = minari.DataCollector(gym.make("Hopper-v5", max_episode_steps=max_steps), record_infos=False)
    rng = np.random.default_rng(seed)
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        scale = 0.05 if episode % 2 else 0.6  # a gentle hand stays up until the limit; a rough one falls
        done = False
        while not done:
            action = np.clip(scale * rng.standard_normal(3), -1, 1).astype(np.float32)
            _, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    return env.create_dataset(
        dataset_id=dataset_id,
        algorithm_name="Gaussian actions",
        description="a test dataset",
        ref_min_score=-20.0,
        ref_max_score=3000.0,
    )


@pytest.fixture
def minari_home(tmp_path, monkeypatch):
    home = tmp_path / "minari"
    monkeypatch.setenv(MINARI_PATH_VAR, str(home))
    return home


def test_a_minari_dataset_flattens_to_d4rl_rows_episode_by_episode(minari_home):
    import minari

    record(MINARI_ID, episodes=12, max_steps=60)
    dataset = minari.load_dataset(MINARI_ID)
    data = to_d4rl(dataset, MINARI_ID)
    a = data.arrays
    assert data.rows == dataset.total_steps and len(episode_ends(a["terminals"], a["timeouts"])) == 12
    row = 0
    for episode in dataset.iterate_episodes():
        rows = slice(row, row + len(episode.actions))
        np.testing.assert_array_equal(a["observations"][rows], episode.observations[:-1].astype(np.float32))
        np.testing.assert_array_equal(a["next_observations"][rows], episode.observations[1:].astype(np.float32))
        np.testing.assert_array_equal(a["terminals"][rows], episode.terminations)
        np.testing.assert_array_equal(a["timeouts"][rows], episode.truncations & ~episode.terminations)
        row = rows.stop
    assert a["terminals"].sum() > 0 and a["timeouts"].sum() > 0  # both kinds of end
    meta = data.metadata
    assert meta["env_id"] == "Hopper-v5" and meta["minari_id"] == MINARI_ID and meta["ref_scores_source"] == "minari"
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.0, 3000.0)


def test_a_collected_dataset_exported_as_minari_loads_back_the_same_transitions(tmp_path, minari_home):
    import minari

    collect = CollectParams.from_params(
        params(collect={"steps": 3000, "max_episode_steps": 200}), "collected-hopper-random"
    )
    raw = tmp_path / "raw.hdf5"
    collect_to_files(collect, raw, tmp_path / "policy.json", tmp_path / "metrics.json")
    folder = export_file(raw, "collected-hopper-random", "Hopper-v4", tmp_path / "export")
    assert folder == tmp_path / "export" / "dtrepro/hopper/random-v0"
    os.environ[MINARI_PATH_VAR] = str(tmp_path / "export")  # restored by the fixture's monkeypatch
    dataset = minari.load_dataset(minari_id("collected-hopper-random"))
    a = read_d4rl(raw).arrays
    ends = episode_ends(a["terminals"], a["timeouts"])
    assert dataset.total_steps == len(a["rewards"]) and dataset.total_episodes == len(ends)
    start = 0
    for episode, end in zip(dataset.iterate_episodes(), ends, strict=True):
        rows = slice(start, end + 1)
        np.testing.assert_array_equal(episode.observations[:-1], a["observations"][rows])
        np.testing.assert_array_equal(episode.observations[-1], a["next_observations"][end])
        np.testing.assert_array_equal(episode.actions, a["actions"][rows])
        np.testing.assert_array_equal(episode.rewards, a["rewards"][rows])
        np.testing.assert_array_equal(episode.terminations, a["terminals"][rows])
        np.testing.assert_array_equal(episode.truncations, a["timeouts"][rows])
        start = end + 1
    spec = dataset.storage.metadata
    assert json.loads(spec["env_spec"])["id"] == "Hopper-v4" and dataset.recover_environment().spec.id == "Hopper-v4"
    assert (spec["ref_min_score"], spec["ref_max_score"]) == (-20.272305, 3234.3)  # what the pipeline used
    assert spec["algorithm_name"] == "uniform random actions"
    assert "collected-hopper-random" in spec["description"]


def test_a_failed_download_never_deletes_the_user_s_folder(minari_home):
    """A dataset's folder with the user's files but no data/ (not a dataset yet): the failed download leaves it."""
    mine = minari_home / "mujoco" / "hopper" / "medium-v0"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(DtreproError):
        load("mujoco/hopper/medium-v0", remote=True, deadline_s=1)
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in minari_home.iterdir()) == ["mujoco"]  # no temporary folder left
    assert os.environ[MINARI_PATH_VAR] == str(minari_home)


def test_an_absent_id_offline_is_one_paragraph_naming_the_id_the_folder_and_what_to_do(minari_home):
    with pytest.raises(DtreproError) as local_only:
        load("mujoco/hopper/medium-v0", remote=False, deadline_s=5)
    message = one_line(str(local_only.value))
    assert "mujoco/hopper/medium-v0" in message and str(minari_home) in message
    assert "minari download mujoco/hopper/medium-v0" in message and "data.minari_remote is false" in message
    with pytest.raises(DtreproError) as remote:  # the remote unreachable here: within the deadline, same advice
        load("mujoco/hopper/medium-v0", remote=True, deadline_s=1)
    message = one_line(str(remote.value))
    assert "Minari's remote could not provide it" in message and "minari download mujoco/hopper/medium-v0" in message
    assert not (minari_home / "mujoco" / "hopper" / "medium-v0").exists()


def test_a_dataset_whose_spaces_are_not_flat_boxes_is_refused(minari_home):
    import minari
    from minari.data_collector import EpisodeBuffer

    space = gym.spaces.Box(-np.inf, np.inf, (4, 3), np.float64)
    steps = 5
    buffer = EpisodeBuffer(
        id=0,
        observations=np.zeros((steps + 1, 4, 3)),
        actions=np.zeros((steps, 3), np.float32),
        rewards=np.zeros(steps),
        terminations=np.zeros(steps, bool),
        truncations=np.arange(steps) == steps - 1,
    )
    action_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    minari.create_dataset_from_buffers(
        "test/hopper/grid-v0", [buffer], observation_space=space, action_space=action_space, algorithm_name="none"
    )
    with pytest.raises(DtreproError, match="flat Box spaces"):
        to_d4rl(minari.load_dataset("test/hopper/grid-v0"), "test/hopper/grid-v0")


def test_minari_ids_are_names_of_the_registry():
    from dtrepro.registry.datasets import env_id, lookup, published

    assert lookup("mujoco/walker2d/expert-v0").source == "minari" and env_id("mujoco/walker2d/expert-v0", "v4") == (
        "Walker2d-v5"
    )
    assert "not comparable" in published("mujoco/hopper/medium-v0")
    for bad in ("mujoco/ant/medium-v0", "mujoco/hopper/medium", "x;y/hopper/medium-v0"):
        with pytest.raises(DtreproError):
            lookup(bad)
    DownloadParams.from_params(params(), "mujoco/hopper/medium-v0")  # the data section serves Minari ids too


@pytest.mark.slow
def test_the_smoke_pipeline_runs_on_a_minari_dataset_named_alone(tmp_path):
    """Only study.datasets names it: the raw file holds exactly Minari's steps and episodes, repair changes
    nothing, training and evaluation run on Hopper-v5, and scores use the dataset's own reference returns."""
    home = tmp_path / "minari"
    os.environ[MINARI_PATH_VAR] = str(home)
    try:
        dataset = record(MINARI_ID, episodes=30, max_steps=120)
    finally:
        del os.environ[MINARI_PATH_VAR]
    repo = copy_repo(tmp_path)
    proc = run(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "-S", f"study.datasets=[{MINARI_ID}]"],
        repo,
        env={MINARI_PATH_VAR: str(home)},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load((repo / "params.yaml").read_text())["study"]["datasets"] == [MINARI_ID]
    source = json.loads((repo / f"reports/source/{MINARI_ID}.json").read_text())
    assert source["rows"] == dataset.total_steps and source["dataset_episodes"] == dataset.total_episodes
    assert source["env_id"] == "Hopper-v5" and source["ref_scores_source"] == "minari"
    repair = json.loads((repo / f"reports/repair/{MINARI_ID}.json").read_text())
    assert repair["rows"] == dataset.total_steps and repair["episodes"] == dataset.total_episodes
    assert (
        repair["rows_changed_timeouts_added"] == repair["rows_changed_timeouts_removed"] == repair["rows_dropped"] == 0
    )
    evaluation = json.loads((repo / f"reports/eval/{MINARI_ID}/k5-seed0.json").read_text())
    assert evaluation["env_id"] == "Hopper-v5" and evaluation["ref_scores_source"] == "minari"
    assert evaluation["ref_min_score"] == -20.0 and evaluation["ref_max_score"] == 3000.0
    table = " ".join((repo / "results/ablations.md").read_text().split())
    assert f"## {MINARI_ID} (Hopper-v5)" in table and "not comparable" in table
    assert "own reference returns (minari: random -20, expert 3000)" in table
    suite = " ".join((repo / "results/suite.md").read_text().split())
    assert "D4RL-normalised" not in suite and "| references |" in suite and "| minari |" in suite
    assert json.loads((repo / "results/metrics.json").read_text())["references"] == "minari"
    assert json.loads((repo / "results/ablations.json").read_text())[f"{MINARI_ID}.references"] == "minari"
    exported = repo / f"data/{MINARI_ID}/minari/{MINARI_ID}/data/main_data.hdf5"
    assert exported.is_file()
    assert "Data and pipelines are up to date." in run(["dvc", "status"], repo).stdout


def test_a_dataset_recorded_on_another_env_than_its_id_names_is_refused(minari_home):
    import minari

    env = minari.DataCollector(gym.make("Hopper-v4", max_episode_steps=20), record_infos=False)
    env.reset(seed=0)
    for _ in range(20):
        env.step(env.action_space.sample())
    env.create_dataset(dataset_id="test/hopper/old-v0", algorithm_name="random")
    with pytest.raises(DtreproError, match="records the env Hopper-v4, but the pipeline trains and evaluates"):
        to_d4rl(minari.load_dataset("test/hopper/old-v0"), "test/hopper/old-v0")
