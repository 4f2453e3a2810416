"""`dtrepro verify`: run stages again in a scratch folder and compare their outputs with the workspace's.

A stage restored from the run-cache is only as true as the entry it came from: anyone who can write the
team's remote can store an entry whose outputs no run made. `verify` re-runs stages (those named, or a
sample of the evaluate stages) in a temporary folder holding exactly their declared deps (linked, not
copied) and params.yaml, so the workspace, dvc.lock and the run-cache are left untouched, then compares:

- bytes, where the run is bit-reproducible (evaluation of float32 models on the CPU);
- otherwise the scores: each restored mean normalised score must lie within the re-run's 95% CI (bf16
  kernels, and so bits, differ across processors). A train stage's checkpoints that differ in bytes are
  judged by evaluating them there with its evaluate stage and comparing that with the workspace's evaluation.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import tempfile
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path

from dtrepro.evaluation.results import metric_key
from dtrepro.pipeline.commands import repo_env
from dtrepro.runtime.errors import DtreproError

SCORE = "normalized_score"


@dataclass
class Verdict:
    stage: str
    ok: bool
    how: str  # what was compared and found

    def __str__(self) -> str:
        return f"{'ok      ' if self.ok else 'MISMATCH'} {self.stage}: {self.how}"


def _stages(repo, names: list[str], sample: int, seed: int) -> list:
    """The named stages of dvc.yaml, or `sample` of its evaluate stages chosen with `seed`."""
    from dvc.exceptions import DvcException

    if names:
        try:
            return [stage for name in names for stage in repo.stage.collect(name)]
        except DvcException as err:
            raise DtreproError(f"dtrepro verify: {err}. Name stages as `dvc status` shows them.") from None
    evaluations = sorted((s for s in repo.index.stages if s.addressing.startswith("evaluate@")), key=str)
    return random.Random(seed).sample(evaluations, min(sample, len(evaluations)))


def _rerun(root: Path, stage, scratch: Path) -> None:
    """Run `stage`'s command in `scratch`, with its deps linked from `root` and root's params.yaml."""
    for dep in stage.deps:
        target = scratch / dep.def_path
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to((root / dep.def_path).resolve())
    if not (scratch / "params.yaml").exists():
        shutil.copy(root / "params.yaml", scratch / "params.yaml")
    proc = subprocess.run(stage.cmd, shell=True, cwd=scratch, env=repo_env(scratch), capture_output=True, text=True)
    if proc.returncode:
        raise DtreproError(
            f"dtrepro verify: {stage.addressing} failed when run again in {scratch} (exit {proc.returncode}): "
            f"{' '.join((proc.stderr or proc.stdout).split())[-600:]}"
        )


def _episode_means(path: Path) -> dict[str, float]:
    """Each (checkpoint, target)'s mean normalised score over an evaluation's episodes (its CSV), under the
    metrics' key."""
    groups: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = metric_key(row["checkpoint"], float(row["target"]), f"{SCORE}_mean")
            groups.setdefault(key, []).append(float(row[SCORE]))
    return {key: sum(values) / len(values) for key, values in groups.items()}


def _scores_agree(root: Path, scratch: Path, stage) -> tuple[bool, str]:
    """Whether each mean normalised score the workspace holds for evaluate `stage` (in its metrics and averaged
    from its episodes) lies within the 95% CI of the re-run's."""
    metrics = next(out.def_path for out in stage.outs if out.def_path.endswith(".json"))
    episodes = next(out.def_path for out in stage.outs if out.def_path.endswith(".csv"))
    again = _json(scratch / metrics)
    keys = sorted(k for k in again if k.endswith(f".{SCORE}_mean"))
    if not keys:
        return False, "the re-run's metrics hold no scores"
    restored = {"metrics": _json(root / metrics), "episodes": _episode_means(root / episodes)}
    for key in keys:
        low, high = again[key.replace("_mean", "_ci95_low")], again[key.replace("_mean", "_ci95_high")]
        for where, values in restored.items():
            mean = values.get(key)
            if mean is None or not low <= mean <= high:
                return False, f"{key} in its {where} is {mean}; the run gives {again[key]:.2f} [{low:.2f}, {high:.2f}]"
    return True, f"every score within the re-run's 95% CI ({len(keys)} compared)"


def verify_stage(root: Path, repo, stage) -> Verdict:
    """Run `stage` again in a scratch folder; compare its outputs with the workspace's."""
    name = stage.addressing
    with tempfile.TemporaryDirectory(prefix="dtrepro-verify-") as tmp:
        scratch = Path(tmp)
        _rerun(root, stage, scratch)
        outs = [out.def_path for out in stage.outs]
        differ = [p for p in outs if not _same_bytes(root / p, scratch / p)]
        if not differ:
            return Verdict(name, True, f"{len(outs)} outputs identical, byte for byte")
        if name.startswith("evaluate@"):
            ok, how = _scores_agree(root, scratch, stage)
            return Verdict(name, ok, f"{', '.join(differ)} differ in bytes; {how}")
        checkpoints = [p for p in differ if p.endswith(".pt")]
        evaluation = _downstream_evaluate(repo, stage)
        if not checkpoints:  # a train stage's log and metrics hold its throughput: they differ from run to run
            same = len([p for p in outs if p.endswith(".pt")])
            return Verdict(name, same > 0, f"{same} checkpoints identical, byte for byte ({', '.join(differ)} differ)")
        if evaluation is None:
            return Verdict(name, False, f"{', '.join(differ)} differ in bytes, and no evaluate stage reads them")
        _rerun(root, evaluation, scratch)  # scores the re-run's checkpoints, which lie in scratch already
        ok, how = _scores_agree(root, scratch, evaluation)
        return Verdict(name, ok, f"its checkpoints differ in bytes; evaluated by {evaluation.addressing}: {how}")


def _downstream_evaluate(repo, stage):
    """The evaluate stage that reads `stage`'s checkpoints, or None."""
    made = {out.def_path for out in stage.outs}
    return next(
        (s for s in repo.index.stages if s.addressing.startswith("evaluate@") and {d.def_path for d in s.deps} & made),
        None,
    )


def _same_bytes(a: Path, b: Path) -> bool:
    if a.is_dir() or b.is_dir():
        files = {p.relative_to(a) for p in a.rglob("*") if p.is_file()} if a.is_dir() else set()
        return files == ({p.relative_to(b) for p in b.rglob("*") if p.is_file()} if b.is_dir() else set()) and all(
            (a / f).read_bytes() == (b / f).read_bytes() for f in files
        )
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def verify(root: Path, names: list[str], sample: int = 1, seed: int = 0) -> list[Verdict]:
    """Re-run the stages `names` (or `sample` evaluate stages) and compare; print each verdict as it comes."""
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        stages = _stages(repo, names, sample, seed)
        if not stages:
            raise DtreproError("dtrepro verify: dvc.yaml has no evaluate stage to sample; name the stages to verify.")
        verdicts = []
        for stage in stages:
            print(f"verify: running {stage.addressing} again ...", flush=True)
            verdicts.append(verify_stage(root, repo, stage))
            print(verdicts[-1], flush=True)
    return verdicts
