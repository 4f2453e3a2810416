"""Named runs: a profile's values handed to `dvc exp run -S` exactly, one named run at a time."""

from __future__ import annotations

import fcntl
import re

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from dtrepro.params import flatten, merge
from dtrepro.pipeline.named_runs import (
    committed_params,
    hydra_value,
    overrides,
    parse_assignment,
    resolve,
    run,
    validate,
    workspace_lock,
)
from dtrepro.runtime.errors import DtreproError

from helpers import ROOT, one_line
from helpers import run as run_in


def test_merge_overrides_nested_values_and_refuses_unknown_keys():
    base = {"data": {"url": None, "retries": 5}, "repair": {"dt": 0.008}}
    assert merge(base, {"data": {"url": "x"}}) == {"data": {"url": "x", "retries": 5}, "repair": {"dt": 0.008}}
    assert base["data"]["url"] is None  # not modified in place
    with pytest.raises(DtreproError, match="'data.ulr' names no parameter"):
        merge(base, {"data": {"ulr": "x"}})


def test_assignments_are_read_as_yaml():
    assert parse_assignment("repair.max_episode_steps=300") == {"repair": {"max_episode_steps": 300}}
    assert parse_assignment("data.url=null") == {"data": {"url": None}}
    assert parse_assignment("train.lr=1e-4") == {"train": {"lr": 1e-4}}  # YAML 1.2, as DVC reads it: a number
    assert parse_assignment("study.seeds=[0, 1]") == {"study": {"seeds": [0, 1]}}
    with pytest.raises(DtreproError, match="is not valid YAML"):
        parse_assignment("eval.targets=[3600")
    with pytest.raises(DtreproError, match="section.key=value"):
        parse_assignment("repair.dt")


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 0.0006, 1e-05, "Hopper-v4", "/data/x y.hdf5", "it's", "3600", "a\\b", [5, 1], [3600.0, 400.0], []],
)
def test_values_reach_dvc_exp_run_unchanged(value):
    """What `-S` says is parsed by Hydra's own override grammar (DVC's) back to exactly the value."""
    parsed = OverridesParser.create().parse_overrides([f"a.b={hydra_value(value)}"])[0].value()
    assert parsed == value and type(parsed) is type(value)


def test_every_profile_resolves_against_the_committed_params():
    for path in (ROOT / "profiles").glob("*.yaml"):
        validate(resolve(ROOT, path.stem, []))  # every section's types and ranges, as a named run checks them
    with pytest.raises(DtreproError, match="train"):
        validate(resolve(ROOT, "smoke", ["train.steps=abc"]))
    with pytest.raises(DtreproError, match="No named run 'nope'"):
        resolve(ROOT, "nope", [])


def test_only_the_values_that_differ_from_the_workspace_are_set():
    current = committed_params(ROOT)
    wanted = resolve(ROOT, "smoke", ["eval.episodes=2"])
    sets = overrides(wanted, current)
    smoke = flatten(yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text()))
    changed = {k for k, v in smoke.items() if flatten(current)[k] != v} | {"eval.episodes"}
    assert {s.split("=")[0] for s in sets} == changed
    assert overrides(current, current) == []


def test_a_second_named_run_is_refused_while_one_holds_the_workspace(repo_copy):
    with workspace_lock(repo_copy, "first"):
        with pytest.raises(DtreproError, match=r"Another named run is running .*'first', PID \d+.*'smoke' was not"):
            run(repo_copy, "smoke", [], [])
    lock = repo_copy / ".dvc" / "tmp" / "named-run.lock"
    with open(lock) as f:  # released
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_profile_builds_on_its_base():
    from dtrepro.pipeline.named_runs import resolve

    smoke, suite_smoke = resolve(ROOT, "smoke", []), resolve(ROOT, "suite-smoke", [])
    assert suite_smoke["model"] == smoke["model"] and suite_smoke["train"] == smoke["train"]  # the smoke sizes
    assert len(suite_smoke["study"]["datasets"]) == 3 and suite_smoke["eval"]["targets"] is None
    assert suite_smoke["collect"]["steps"] == smoke["collect"]["steps"]


def test_a_cycle_of_bases_and_a_name_that_is_a_path_are_one_paragraph(repo_copy):
    """A cyclic `base:` was a RecursionError; `../params` or `sub/x` reached DVC as an experiment name (exit 255)."""
    (repo_copy / "profiles" / "a.yaml").write_text("base: b\n")
    (repo_copy / "profiles" / "b.yaml").write_text("base: a\n")
    with pytest.raises(DtreproError, match=r"'base' must name another named run, not 'a' \(bases: a -> b -> a\)"):
        resolve(repo_copy, "a", [])
    for name in ("../params", "sub/x", "smoke.yaml"):
        with pytest.raises(DtreproError, match=f"No named run '{re.escape(name)}'.*never paths"):
            resolve(repo_copy, name, [])


def test_a_params_yaml_that_is_not_yaml_stops_a_named_run_before_dvc(repo_copy):
    """DVC's own refusal was exit 255 with DVC's words."""
    (repo_copy / "params.yaml").write_text("study: [unclosed\n")
    with pytest.raises(DtreproError, match="params.yaml is not valid YAML"):
        run(repo_copy, "smoke", [], [])
    assert not (repo_copy / "dvc.lock").exists()


QUIET = (
    r"No file hash info found",  # DVC, for every output the run is about to make
    r"-pending",  # the experiment's name until it has succeeded
    r"best evaluation -?\d+\.\d{2,}",  # a score printed to sixteen digits
    r"Traceback",
    r"leaked semaphore",  # the collection's worker pool left without being closed and joined (half the runs before)
)


@pytest.mark.slow
def test_a_named_run_prints_no_noise(smoke_done):
    """What `dtrepro run smoke` prints: DVC's stages and the stages' own lines, none of the noise of before."""
    noisy = [p for p in QUIET if re.search(p, smoke_done.output)]
    assert not noisy, noisy
    assert "Reproducing experiment 'smoke'" in smoke_done.output
    assert re.search(r"best evaluation -?\d+\.\d\b", smoke_done.output)
    assert "named run: the experiment 'smoke' holds this run" in smoke_done.output


def test_compare_fits_80_columns_and_shows_only_what_differs():
    """Two smoke experiments that differ in eval.episodes, among the 26 params a named run sets: the one that
    differs is a row, the equal params are left out, equal metrics are listed once."""
    from dtrepro.pipeline.compare import table

    params_of = {f"train.p{i}": i for i in range(26)}  # the same in both
    found = {
        "smoke": {"params": {**params_of, "eval.episodes": 3}, "metrics": {"mean.last": 3.25, "iqm.last": 3.25}},
        "smoke-more-episodes-than-before": {
            "params": {**params_of, "eval.episodes": 10},
            "metrics": {"mean.last": 4.5, "iqm.last": 3.25},
        },
    }
    text = table(found)
    assert max(map(len, text.splitlines())) <= 80
    assert re.search(r"^eval\.episodes +3 +10$", text, re.M) and re.search(r"^mean\.last +3\.25 +4\.5$", text, re.M)
    assert "train.p1" not in text and "The same in every experiment: iqm.last 3.25" in text
    many = {f"exp-{i}": {"params": {"eval.seed": i}, "metrics": {}} for i in range(12)}
    wrapped = table(many)
    assert max(map(len, wrapped.splitlines())) <= 80 and all(f"exp-{i}" in wrapped for i in range(12))
    assert "train.p1" in table(found, everything=True)


@pytest.mark.slow
def test_a_named_run_that_changes_nothing_records_no_experiment(copy_done):
    """The smoke run again, and with -S of the value it already has: nothing to run, and no duplicate experiment."""
    import sys

    before = run_in(["dvc", "exp", "list", "--name-only"], copy_done).stdout.split()
    for extra in ([], ["-S", "eval.episodes=3"]):
        proc = run_in([sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", *extra], copy_done, timeout=900)
        assert proc.returncode == 0 and "'smoke' changes nothing" in one_line(proc.stdout), proc.stdout + proc.stderr
    assert run_in(["dvc", "exp", "list", "--name-only"], copy_done).stdout.split() == before


def test_list_says_what_each_named_run_is_and_its_time_and_show_diff_only_what_it_changes():
    from dtrepro.pipeline.named_runs import changes, describe, names

    lines = [describe(ROOT, name) for name in names(ROOT)]
    assert all(re.fullmatch(r"[a-z-]+: .+; time: .+", line) for line in lines), lines
    assert any(line.startswith("smoke: the whole pipeline") and "measured" in line for line in lines)
    changed = changes(ROOT, "smoke", ["eval.seed=7"])
    assert changed["eval.episodes"] == 3 and changed["eval.seed"] == 7 and "run.device" not in changed
    assert changes(ROOT, "default", []) == {}
