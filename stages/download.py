"""source stage, data.source: download -- fetch the D4RL dataset that params name, resumably, and check it.

Reads  params.yaml data.*
Writes --output (D4RL layout) and <output>.sha256 (its hash), --policy (what is known of the
       policy that made the data), --metrics (JSON: URL, size, hash, whether it was checked)
A dropped download leaves <output>.part, which the next run resumes.
"""

import argparse

from dtrepro.data.download import DownloadParams, download_to_files
from dtrepro.errors import run_stage
from dtrepro.params import add_params_argument


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    parser.add_argument("--output", required=True, help="the dataset, e.g. data/raw.hdf5")
    parser.add_argument("--policy", required=True, help="e.g. models/behaviour.json")
    parser.add_argument("--metrics", required=True, help="e.g. reports/source.json")
    args = parser.parse_args(argv)
    params = DownloadParams.from_params(args.params)
    result = download_to_files(params, args.output, args.policy, args.metrics)
    checked = "checked" if result["sha256_checked"] else "NOT checked (data.check_sha256: false)"
    print(f"download: {result['url']} -> {args.output} (sha256 {result['sha256']}, {checked})")


if __name__ == "__main__":
    run_stage(main)
