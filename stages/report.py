"""report stage: the ablation tables, metrics and plots from every run's evaluation, by dataset.

Reads  --evals/<D>/k<K>-seed<S>.csv and --train-logs/<D>/k<K>-seed<S>.tsv for every D of study.datasets,
       K of study.context_lens and S of study.seeds, --repair-reports/<D>.json (the data's returns),
       --source-reports/<D>.json (the data's SHA-256 and provenance), --lock (dvc.lock: the checkpoints'
       hashes, which each evaluation must name); params.yaml study.*, eval.*, data.env_version
Writes --markdown (per dataset: headline, return conditioning, context length, per seed; beside the
       published scores), --metrics (the same numbers as flat metrics), --return-csv and --context-csv
       (dvc plots data), --plots-dir/<D>/return_conditioning.png, context_length.png, learning_curves.png
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from dataclasses import fields
from pathlib import Path

from dtrepro.params import EvalParams, StudyParams, add_params_argument
from dtrepro.reporting.report import ReportPaths, write_report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    for name in (f.name for f in fields(ReportPaths)):
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, type=Path)
    args = parser.parse_args(argv)
    paths = ReportPaths(**{f.name: getattr(args, f.name) for f in fields(ReportPaths)})
    study = StudyParams.from_params(args.params)
    write_report(study, {name: EvalParams.from_params(args.params, name) for name in study.datasets}, paths)
    print(paths.markdown.read_text())
    print(f"report: tables {paths.markdown}, plots {paths.plots_dir}/*/*.png")


if __name__ == "__main__":
    run_stage(main)
