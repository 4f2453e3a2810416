"""source stage, data.source: download -- fetch the D4RL dataset that params name, resumably, and check it.

Reads  params.yaml data.{dataset,url,sha256,retries,timeout_s,give_up_after_s}
Writes data/raw.hdf5 (D4RL layout) and data/raw.hdf5.sha256 (its hash),
       models/behaviour.json (what is known of the policy that made the data),
       reports/source.json (metrics)
A dropped download leaves data/raw.hdf5.part, which the next run resumes.
"""

import argparse
from dataclasses import replace

from dtrepro.data.download import DownloadParams, download_to_files
from dtrepro.errors import run_stage
from dtrepro.params import section


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    parser.add_argument("--dataset", help="D4RL dataset name, e.g. hopper-medium-v2 (overrides data.dataset)")
    parser.add_argument("--url", help="http(s)://, file:// URL or local path (overrides data.url)")
    parser.add_argument("--sha256", help="expected SHA-256 of the file (overrides data.sha256)")
    parser.add_argument("--output", default="data/raw.hdf5", help="where to write (default: data/raw.hdf5)")
    parser.add_argument("--policy", default="models/behaviour.json", help="(default: models/behaviour.json)")
    parser.add_argument("--metrics", default="reports/source.json", help="(default: reports/source.json)")
    args = parser.parse_args(argv)
    params = DownloadParams.from_dict(section(args.params, "data"))
    given = {k: getattr(args, k) for k in ("dataset", "url", "sha256") if getattr(args, k)}
    params = replace(params, **given)
    result = download_to_files(params, args.output, args.policy, args.metrics)
    print(f"download: {result['url']} -> {args.output} (sha256 {result['sha256']})")


if __name__ == "__main__":
    run_stage(main)
