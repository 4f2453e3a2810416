"""report stage: the ablation tables, metrics and plots from every run's evaluation.

Reads  reports/eval/k<K>-seed<S>.csv for every K of study.context_lens and S of study.seeds,
       reports/train/k<K>-seed<S>.tsv (learning curves), reports/repair.json (the dataset's returns);
       params.yaml study.*, eval.*
Writes results/ablations.md (tables: headline, return conditioning, context length, per seed),
       results/ablations.json (the same numbers as flat metrics),
       results/return_conditioning.csv, results/context_length.csv (dvc plots data),
       results/plots/return_conditioning.png, context_length.png, learning_curves.png
"""

import argparse
from pathlib import Path

from dtrepro.errors import run_stage
from dtrepro.evaluate import EvalParams
from dtrepro.params import section
from dtrepro.report import ReportPaths, write_report
from dtrepro.runs import Study


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    parser.add_argument("--root", default=".", help="folder holding reports/ and results/ (default: .)")
    args = parser.parse_args(argv)
    study = Study.from_section(section(args.params, "study"))
    params = EvalParams.from_dict(section(args.params, "eval"))
    write_report(study, params, args.root)
    table = Path(args.root) / ReportPaths.markdown
    print(table.read_text())
    print(f"report: tables {table}, plots {Path(args.root) / ReportPaths.plots_dir}/*.png")


if __name__ == "__main__":
    run_stage(main)
