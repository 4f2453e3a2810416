"""repair stage: find every episode boundary of a raw D4RL file and write a clean copy with a report.

Reads  data/raw.hdf5 (D4RL v0, v1 or v2 layout); params.yaml repair.*
Writes data/clean.hdf5 (every episode ends on exactly one terminals/timeouts row)
       reports/repair.json (boundaries found and how, rows changed and why, episode statistics)
"""

import argparse

from dtrepro.data.repair import RepairParams, repair_file
from dtrepro.errors import run_stage
from dtrepro.params import section


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    parser.add_argument("--input", default="data/raw.hdf5", help="raw D4RL file (default: data/raw.hdf5)")
    parser.add_argument("--output", default="data/clean.hdf5", help="clean file (default: data/clean.hdf5)")
    parser.add_argument("--report", default="reports/repair.json", help="JSON report (default: reports/repair.json)")
    args = parser.parse_args(argv)
    params = RepairParams.from_dict(section(args.params, "repair"))
    report = repair_file(args.input, args.output, args.report, params)
    found = ", ".join(f"{k[len('boundaries_') :]} {v}" for k, v in report.items() if k.startswith("boundaries_") and v)
    print(
        f"repair: {report['rows']} rows, {report['episodes']} episodes ({found}); "
        f"{report['rows_changed_timeouts_added']} timeouts added -> {args.output}, {args.report}"
    )


if __name__ == "__main__":
    run_stage(main)
