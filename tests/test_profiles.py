"""Profiles: named overrides applied for one command, leaving the tracked params.yaml as it was."""

from __future__ import annotations

import sys

import pytest
import yaml

from dtrepro.errors import DtreproError
from dtrepro.params import merge, parse_assignment
from dtrepro.profiles import resolve, restore_interrupted

from conftest import ROOT, run


def test_merge_overrides_nested_values_and_refuses_unknown_keys():
    base = {"data": {"url": None, "retries": 5}, "repair": {"dt": 0.008}}
    assert merge(base, {"data": {"url": "x"}}) == {"data": {"url": "x", "retries": 5}, "repair": {"dt": 0.008}}
    assert base["data"]["url"] is None  # not modified in place
    with pytest.raises(DtreproError, match="'data.ulr' names no parameter"):
        merge(base, {"data": {"ulr": "x"}})


def test_assignments_are_read_as_yaml():
    assert parse_assignment("repair.max_episode_steps=300") == {"repair": {"max_episode_steps": 300}}
    assert parse_assignment("data.url=null") == {"data": {"url": None}}
    with pytest.raises(DtreproError, match="section.key=value"):
        parse_assignment("repair.dt")


def test_every_profile_resolves_against_params_yaml():
    for path in (ROOT / "profiles").glob("*.yaml"):
        resolve(ROOT, path.stem, [])
    with pytest.raises(DtreproError, match="No profile 'nope'"):
        resolve(ROOT, "nope", [])


def test_run_applies_the_profile_only_while_the_command_runs(repo_copy):
    before = (repo_copy / "params.yaml").read_bytes()
    script = "import yaml; p = yaml.safe_load(open('params.yaml')); print(p['data']['retries'], p['data']['url'])"
    proc = run(
        [
            sys.executable,
            "-m",
            "dtrepro.profiles",
            "run",
            "smoke",
            "-S",
            "data.url=/x.hdf5",
            "--",
            sys.executable,
            "-c",
            script,
        ],
        repo_copy,
    )
    assert proc.returncode == 0, proc.stderr
    smoke = yaml.safe_load((repo_copy / "profiles" / "smoke.yaml").read_text())
    assert proc.stdout.split() == [str(smoke["data"]["retries"]), "/x.hdf5"]
    assert (repo_copy / "params.yaml").read_bytes() == before
    assert not (repo_copy / ".params.yaml.orig").exists()


def test_failing_command_passes_its_exit_code_and_still_restores(repo_copy):
    before = (repo_copy / "params.yaml").read_bytes()
    proc = run([sys.executable, "-m", "dtrepro.profiles", "run", "smoke", "--", "false"], repo_copy)
    assert proc.returncode == 1
    assert (repo_copy / "params.yaml").read_bytes() == before


def test_a_killed_run_is_repaired_by_the_next(repo_copy):
    before = (repo_copy / "params.yaml").read_bytes()
    (repo_copy / ".params.yaml.orig").write_bytes(before)
    (repo_copy / "params.yaml").write_text("data: {}\n")  # what a SIGKILLed run leaves
    assert restore_interrupted(repo_copy)
    assert (repo_copy / "params.yaml").read_bytes() == before
    assert not restore_interrupted(repo_copy)
