"""repair stage: find every episode boundary of a raw D4RL file and write a clean copy with a report.

Reads  --input (D4RL v0, v1 or v2 layout); params.yaml repair.*, data.env_version; --dataset NAME (its env)
Writes --output (every episode ends on exactly one terminals/timeouts row)
       --report (JSON: boundaries found and how, rows changed and why, episode statistics)
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse

from dtrepro.data.repair import repair_file
from dtrepro.params import RepairParams, add_dataset_argument, add_params_argument


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_dataset_argument(parser)
    parser.add_argument("--input", required=True, help="raw D4RL file, e.g. data/hopper-medium-v2/raw.hdf5")
    parser.add_argument("--output", required=True, help="clean file, e.g. data/hopper-medium-v2/clean.hdf5")
    parser.add_argument("--report", required=True, help="JSON report, e.g. reports/repair/hopper-medium-v2.json")
    args = parser.parse_args(argv)
    params = RepairParams.from_params(args.params, args.dataset)
    report = repair_file(args.input, args.output, args.report, params)
    found = ", ".join(f"{k[len('boundaries_') :]} {v}" for k, v in report.items() if k.startswith("boundaries_") and v)
    print(
        f"repair {args.dataset}: {report['rows']} rows, {report['episodes']} episodes ({found}); "
        f"{report['rows_changed_timeouts_added']} timeouts added -> {args.output}, {args.report}"
    )


if __name__ == "__main__":
    run_stage(main)
