"""page stage: the results as one self-contained HTML page (open it in a browser; no network needed).

Reads  --report (results/ablations.md) and --report-plots (its PNGs), --suite and --suite-plots
Writes --html (results/index.html): both tables with their findings, every PNG embedded
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from pathlib import Path

from dtrepro.reporting.page import write_page


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("report", "report-plots", "suite", "suite-plots", "html"):
        parser.add_argument(f"--{name}", required=True, type=Path)
    args = parser.parse_args(argv)
    write_page(args.html, [("Ablations", args.report, args.report_plots), ("Suite", args.suite, args.suite_plots)])
    print(f"page: {args.html} (open it in a browser, offline)")


if __name__ == "__main__":
    run_stage(main)
