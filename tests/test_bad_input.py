"""Every kind of bad input gets one clear paragraph, exit status 2, no traceback, and no output left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from helpers import HOPPER, ROOT, one_line, params, run


def write(path: Path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)


def good(n=50):
    rng = np.random.default_rng(0)
    return dict(
        observations=rng.normal(size=(n, 11)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
    )


def with_nan():
    d = good()
    d["observations"][7, 3] = np.nan
    return d


def with_inf():
    d = good()
    d["rewards"][3] = np.inf
    return d


def make_unreadable(path: Path, tmp: Path):
    """A file h5py opens and whose keys it lists, but whose third object header is damaged (RuntimeError)."""
    with h5py.File(path, "w", libver="latest") as f:
        for name, value in good().items():
            f.create_dataset(name, data=value)
    data = bytearray(path.read_bytes())
    headers = [m.start() for m in re.finditer(b"OHDR", bytes(data))]
    data[headers[2] + 4] = 99  # an object header version that does not exist
    path.write_bytes(bytes(data))


def make_truncated(path: Path, tmp: Path):
    write(tmp / "whole.hdf5", **good(20000))
    whole = (tmp / "whole.hdf5").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


CASES = {
    "missing_key": (lambda p, t: write(p, **{k: v for k, v in good().items() if k != "actions"}), "lacks actions"),
    "ragged": (lambda p, t: write(p, **{**good(), "actions": good(49)["actions"]}), "unequal length"),
    "nan": (lambda p, t: write(p, **with_nan()), "NaN or infinite value.*first at row 7"),
    "inf": (lambda p, t: write(p, **with_inf()), "'rewards' holds 1 NaN or infinite"),
    "wrong_dtype": (lambda p, t: write(p, **{**good(), "observations": np.ones((50, 11), np.int32)}), "dtype int32"),
    "bad_flags": (
        lambda p, t: write(p, **{**good(), "terminals": np.full(50, 2, np.int64)}),
        "values other than 0 and 1",
    ),
    "wrong_shape": (lambda p, t: write(p, **{**good(), "observations": np.ones(50, np.float32)}), "shape"),
    "no_rows": (lambda p, t: write(p, **good(0)), "holds no rows"),
    "empty_file": (lambda p, t: p.write_bytes(b""), "the file is empty"),
    "not_hdf5": (lambda p, t: p.write_text("observations,actions\n1,2\n"), "not an HDF5 file"),
    "html": (lambda p, t: p.write_text("<!DOCTYPE html><html>Not found</html>"), "HTML page"),
    "truncated": (make_truncated, "truncated or corrupt"),
    "absent": (lambda p, t: None, "does not exist"),
    "directory": (lambda p, t: p.mkdir(), "is a directory; give the path of a regular file"),
    "fifo": (lambda p, t: os.mkfifo(p), "is a FIFO; give the path of a regular file"),  # would block a reader
    "qpos_1d": (lambda p, t: write(p, **good(), **{"infos/qpos": np.zeros(50)}), "'infos/qpos' has shape .50,."),
    "zero_width": (
        lambda p, t: write(p, **{**good(), "observations": np.ones((50, 0), np.float32)}),
        "'observations' has shape .50, 0.: rows of width 0",
    ),
    "scalar_rewards": (lambda p, t: write(p, **{**good(), "rewards": np.float32(1.0)}), "'rewards' has shape .."),
    "float16": (
        lambda p, t: write(p, **{**good(), "observations": good()["observations"].astype(np.float16)}),
        "'observations' has dtype float16; D4RL layout needs float32 or float64",
    ),
    "huge_rewards": (
        lambda p, t: write(p, **{**good(), "rewards": np.full(50, 1e30, np.float32)}),
        r"'rewards' holds 50 value\(s\) beyond ±100 \(repair.max_abs_reward\)",
    ),
    "huge_observations": (
        lambda p, t: write(p, **{**good(), "observations": np.full((50, 11), 3e38, np.float32)}),
        r"'observations' holds 550 value\(s\) beyond ±1000 \(repair.max_abs_observation\)",
    ),
    "unreadable_objects": (make_unreadable, "cannot be read past its header .*bad object header"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_repair_stage_refuses_bad_input_cleanly(case, tmp_path):
    make, expected = CASES[case]
    raw = tmp_path / "raw.hdf5"
    make(raw, tmp_path)
    out, report = tmp_path / "out" / "clean.hdf5", tmp_path / "out" / "repair.json"
    proc = subprocess.run(
        [sys.executable, "stages/repair.py", "--dataset", HOPPER, "--input", str(raw), "--output", str(out)]
        + ["--report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and str(raw) in proc.stderr.replace("\n", " ")
    assert len(proc.stderr.strip().split("\n\n")) == 1  # one paragraph
    assert re.search(expected, " ".join(proc.stderr.split())), proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # not even a temporary file


def repair_stage(raw: Path, out: Path, prefix=()) -> subprocess.CompletedProcess:
    paths = ["--dataset", HOPPER, "--input", str(raw), "--output", str(out), "--report", str(out) + ".json"]
    return subprocess.run(
        [*prefix, sys.executable, "stages/repair.py", *paths], cwd=ROOT, capture_output=True, text=True
    )


# root passes every permission check; without these two capabilities it meets them as any user would
WITHOUT_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_an_unreadable_input_and_an_unwritable_output_folder(tmp_path, hopper_file):
    raw = tmp_path / "raw.hdf5"
    raw.write_bytes(hopper_file.read_bytes())
    raw.chmod(0o000)
    proc = repair_stage(raw, tmp_path / "out" / "clean.hdf5", prefix=WITHOUT_OVERRIDE)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot be read (Permission denied)" in " ".join(proc.stderr.split())
    raw.chmod(0o644)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = repair_stage(raw, locked / "clean.hdf5", prefix=WITHOUT_OVERRIDE)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"Cannot write {locked / 'clean.hdf5'}" in " ".join(proc.stderr.split())
    assert not any(locked.iterdir())
    locked.chmod(0o755)


@pytest.mark.slow  # a subprocess that imports torch per case
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.heads", "0", "model.heads is 0 (int): input should be greater than or equal to 1"),
        ("train.lr", "abc", "train.lr is 'abc' (str): input should be a valid number"),
        ("eval.targets", "abc", "eval.targets is 'abc' (str): input should be a valid list"),
        ("eval.targets", "'3600'", "eval.targets is '3600' (str): input should be a valid list"),
        ("eval.episodes", "'3'", "eval.episodes is '3' (str): input should be a valid integer"),
        ("eval.episodes", "2.5", "eval.episodes is 2.5 (float): input should be a valid integer"),
        ("eval.episodes", "true", "eval.episodes is True (bool): input should be a valid integer"),
        ("eval.episodes", "{x: 3}", "eval.episodes is {'x': 3} (dict): input should be a valid integer"),
        ("study.context_lens", "['5; touch x #']", "study.context_lens.0 is '5; touch x #' (str)"),
        ("study.datasets", "['hopper-medium-v2; touch x']", "Unknown dataset name 'hopper-medium-v2; touch x'"),
        ("study.datasets", "[walker2d-medium-v3]", "Unknown dataset name 'walker2d-medium-v3'"),
        ("repair.max_abs_reward", "-1", "repair.max_abs_reward is -1 (int): input should be greater than 0"),
    ],
)
def test_a_bad_param_value_stops_a_named_run_before_anything_runs(repo_copy, key, value, message):
    proc = subprocess.run(
        [sys.executable, "-m", "dtrepro.pipeline.cli", "run", "smoke", "-S", f"{key}={value}"],
        cwd=repo_copy,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert not (repo_copy / "dvc.lock").exists() and not (repo_copy / "data").exists()


def test_generated_files_are_ignored_by_git():
    """MuJoCo writes MUJOCO_LOG.TXT where it runs after an unstable step; `dvc plots show` writes dvc_plots/."""
    for path in ("MUJOCO_LOG.TXT", "dvc_plots/index.html", "stages/MUJOCO_LOG.TXT"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def test_a_stage_refuses_to_run_another_checkout_s_code(repo_copy):
    """DVC records a clone's src/ as the stage's deps; running the dtrepro of another checkout instead would record
    one code and run another. Same files (DVC's queue copies) are fine."""
    cmd = [sys.executable, "stages/study.py", "--stamp", "reports/study.ok"]
    env = {"PYTHONPATH": str(ROOT / "src")}
    assert run(cmd, repo_copy, env=env).returncode == 0  # the copy's files are this checkout's
    with open(repo_copy / "src/dtrepro/params.py", "a") as f:
        f.write("# edited in the clone\n")
    proc = run(cmd, repo_copy, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "whose src/dtrepro/params.py differs: DVC would record one code and run another" in one_line(proc.stderr)
    assert run(cmd, repo_copy).returncode == 0  # with its own src/ first, as every command of the project runs it


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("eval.targets=[1.0e+300]", "a target must be a return within ±100000, not 1e+300"),  # NaN metrics before
        ("eval.targets=[400, 400]", "targets must differ"),  # the same episodes pooled twice: a CI too narrow
        ("eval.targets=[12345.61, 12345.64]", "share a key"),  # one metrics key for two targets
        ("eval.episodes=100000", "eval.episodes is 100000 (int): input should be less than or equal to 1000"),
        ("eval.bootstrap_resamples=100000000", "input should be less than or equal to 100000"),
        ("eval.seed=18446744073709551616", "eval.seed is 18446744073709551616 (int): input should be less than"),
        ("study.seeds=[18446744073709551616]", "study.seeds.0 is 18446744073709551616 (int)"),
        ("collect.seed=-1", "collect.seed is -1 (int): input should be greater than or equal to 0"),
        ("data.url=/data/hopper.hdf5", "downloads 0 D4RL datasets (none: data.url applies to D4RL names only)"),
        ("run.device=gpu", "run.device is 'gpu' (str): a device must be auto, cpu, cuda or cuda:N"),  # torch's
        ("eval.env_id=Hopper-v99", "eval.env_id is 'Hopper-v99' (str): an env id must be one of Hopper-v4,"),
        ("train.env_id=Hopper-v3", "train.env_id is 'Hopper-v3' (str)"),  # gymnasium's mujoco-py env
        ("collect.env_id=Ant-v4", "collect.env_id is 'Ant-v4' (str)"),
    ],
)
def test_a_value_that_would_give_a_silently_wrong_result_is_refused(assignment, message):
    """Each of these ran to the end before, with NaN metrics, a pooled or shared target, an out-of-memory, a
    traceback, or data.url ignored (the smoke run studies a collected dataset)."""
    from dtrepro.pipeline.named_runs import resolve, validate
    from dtrepro.runtime.errors import DtreproError

    with pytest.raises(DtreproError) as err:
        validate(resolve(ROOT, "smoke", [assignment]))
    assert message in " ".join(str(err.value).split())


def test_a_section_no_stage_reads_is_refused_and_every_section_is_read():
    """A typo'd section (`trian:`) was ignored: the run used train's old values without a word."""
    from dtrepro.params import SECTIONS, Params
    from dtrepro.pipeline.named_runs import resolve, validate
    from dtrepro.runtime.errors import DtreproError

    def subclasses(cls):
        return {c for s in cls.__subclasses__() for c in (s, *subclasses(s))}

    validate(resolve(ROOT, "smoke", []))  # dtrepro.pipeline.named_runs.validate imports every section's class
    assert set(SECTIONS) == {c.section for c in subclasses(Params)}
    params = resolve(ROOT, "smoke", [])
    with pytest.raises(DtreproError, match="the section 'trian', which no stage reads"):
        validate({**params, "trian": {"steps": 5}})


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of a given size: a disk that fills while a stage writes its output."""
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"small{len(mounted)}"
        folder.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        if subprocess.run(cmd, capture_output=True).returncode:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def source_stage(params_path: Path, folder: Path) -> subprocess.CompletedProcess:
    outputs = ["--output", str(folder / "raw.hdf5"), "--policy", str(folder / "p.json")]
    outputs += ["--metrics", str(folder / "m.json"), "--minari-dir", str(folder / "minari")]
    cmd = [sys.executable, "stages/source.py", "--params", str(params_path), "--dataset", HOPPER, *outputs]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_a_full_disk_is_one_paragraph_naming_the_folder_and_leaves_nothing(small_disk, hopper_file, tmp_path):
    """A file larger than the disk: the repair stage's and the source stage's outputs on it (a traceback before)."""
    small = small_disk(64 * 1024)
    proc = repair_stage(hopper_file, small / "clean.hdf5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"The disk holding {small} is full" in " ".join(proc.stderr.split()), proc.stderr
    assert not any(small.iterdir())
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params(data={"url": str(hopper_file), "check_sha256": False})))
    proc = source_stage(params_path, small)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"The disk holding {small} is full" in " ".join(proc.stderr.split()), proc.stderr
    assert not any(small.iterdir()), list(small.iterdir())


def test_a_disk_too_small_for_the_minari_export_keeps_none_of_the_source_outputs(small_disk, hopper_file, tmp_path):
    """The raw file fits, its Minari export does not: the export died in HDF5 (SIGSEGV, exit 139) and left the
    other outputs written."""
    small = small_disk(int(hopper_file.stat().st_size * 1.5) + 256 * 1024)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params(data={"url": str(hopper_file), "check_sha256": False})))
    proc = source_stage(params_path, small)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"The Minari export of {HOPPER} needs about" in " ".join(proc.stderr.split()), proc.stderr
    assert not any(small.iterdir()), list(small.iterdir())  # the outputs together or not at all


def test_a_failed_folder_output_leaves_no_temporary_folder(tmp_path):
    """The cleanup called unlink() on the temporary folder (IsADirectoryError) and left it behind."""
    from dtrepro.runtime.atomic import atomic_folder

    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_folder(tmp_path / "minari") as tmp:
            (tmp / "data").mkdir()
            (tmp / "data" / "part.hdf5").write_bytes(b"x" * 100)
            raise RuntimeError("half-way")
    assert list(tmp_path.iterdir()) == []


def test_a_file_declaring_more_than_the_machine_holds_is_refused_before_reading(tmp_path):
    """A few kilobytes of compressed HDF5 that declare a terabyte: refused, not read until the kernel kills it."""
    from dtrepro.data.d4rl import read_d4rl
    from dtrepro.runtime.errors import DtreproError

    path = tmp_path / "huge.hdf5"
    with h5py.File(path, "w") as f:
        for name, value in good().items():
            f.create_dataset(name, data=value)
        del f["observations"]
        f.create_dataset("observations", shape=(25 * 10**9, 11), dtype="f4", chunks=(4096, 11), compression="gzip")
    assert path.stat().st_size < 10**6
    with pytest.raises(DtreproError, match=r"huge.hdf5 declares datasets of 10\d\d.\d GiB, more than the"):
        read_d4rl(path)


def test_more_cpus_than_the_machine_has_is_refused(monkeypatch):
    from dtrepro.runtime.errors import DtreproError
    from dtrepro.runtime.threads import usable_cpus

    monkeypatch.setenv("DTREPRO_CPUS", "100000")
    with pytest.raises(DtreproError, match=f"DTREPRO_CPUS is 100000, but this machine has {os.cpu_count()} CPUs"):
        usable_cpus()
