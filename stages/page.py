"""page stage: the results as one self-contained HTML page (open it in a browser; no network needed).

Reads  --report (results/ablations.md) and --report-plots (its PNGs), --suite and --suite-plots, --videos (the
       render stage's, per dataset), --sources (the source stages' metrics: the datasets' SHA-256) and
       params.yaml's study, model, train and eval sections
Writes --html (results/index.html): a header naming the run the numbers are from (experiment, commit, date,
       datasets, the params that define it), the rendered episodes, both tables with their findings, every PNG
       and video embedded
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from pathlib import Path

from dtrepro.params import add_params_argument, load_yaml
from dtrepro.reporting.page import run_facts, write_page


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    for name in ("report", "report-plots", "suite", "suite-plots", "sources", "videos", "html"):
        parser.add_argument(f"--{name}", required=True, type=Path)
    args = parser.parse_args(argv)
    sections = [("Ablations", args.report, args.report_plots), ("Suite", args.suite, args.suite_plots)]
    write_page(args.html, sections, run_facts(load_yaml(args.params), args.sources), args.videos)
    print(f"page: {args.html} (open it in a browser, offline)")


if __name__ == "__main__":
    run_stage(main)
