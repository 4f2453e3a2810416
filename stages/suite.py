"""suite stage: the DT paper's D4RL table -- every dataset of the study beside its published scores, aggregated.

Reads  --evals/<D>/k<K>-seed<S>.csv at the headline K (study.context_lens[0]) for every D of
       study.datasets and S of study.seeds; params.yaml study.*, eval.*, data.env_version
Writes --markdown (per dataset: DT paper, CORL last and best, ours last.pt and best.pt with CIs; the mean
       and IQM over datasets with stratified bootstrap CIs; the performance profile), --metrics (flat, every
       number), --summary (DVC's metrics: the mean and IQM of last.pt and best.pt over datasets),
       --scores-csv and --profile-csv (dvc plots data), --plots-dir/scores.png, performance_profile.png
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from dataclasses import fields
from pathlib import Path

from dtrepro.params import EvalParams, StudyParams, add_params_argument
from dtrepro.reporting.suite import SuitePaths, write_suite


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    for name in (f.name for f in fields(SuitePaths)):
        parser.add_argument(f"--{name.replace('_', '-')}", required=True, type=Path)
    args = parser.parse_args(argv)
    paths = SuitePaths(**{f.name: getattr(args, f.name) for f in fields(SuitePaths)})
    study = StudyParams.from_params(args.params)
    write_suite(study, {name: EvalParams.from_params(args.params, name) for name in study.datasets}, paths)
    print(paths.markdown.read_text())
    print(f"suite: table {paths.markdown}, plots {paths.plots_dir}/*.png")


if __name__ == "__main__":
    run_stage(main)
