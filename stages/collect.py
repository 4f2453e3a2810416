"""source stage, data.source: collect -- make a D4RL-style Hopper dataset offline.

Trains a linear behaviour policy with ARS on the CPU until its D4RL-normalised score
lies in [collect.band_low, collect.band_high], then rolls it out with Gaussian action
noise for collect.steps transitions.

Reads  params.yaml collect.*
Writes data/raw.hdf5 (D4RL layout; collect.layout v0 leaves out timeouts and infos)
       and data/raw.hdf5.sha256, models/behaviour.json (the policy), reports/source.json (metrics)
"""

import argparse

from dtrepro.collect.collect import CollectParams, collect_to_files
from dtrepro.errors import run_stage
from dtrepro.params import section


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", help="params file (default: ./params.yaml if present)")
    parser.add_argument("--output", default="data/raw.hdf5", help="(default: data/raw.hdf5)")
    parser.add_argument("--policy", default="models/behaviour.json", help="(default: models/behaviour.json)")
    parser.add_argument("--metrics", default="reports/source.json", help="(default: reports/source.json)")
    args = parser.parse_args(argv)
    params = CollectParams.from_dict(section(args.params, "collect"))
    result = collect_to_files(params, args.output, args.policy, args.metrics)
    print(
        f"collect: behaviour policy score {result['behaviour_normalized_mean']:.1f} after "
        f"{result['behaviour_env_steps']:,} env steps; {result['rows']:,} rows at "
        f"{result['rollout_steps_per_s']:,.0f} steps/s -> {args.output} (sha256 {result['sha256']})"
    )


if __name__ == "__main__":
    run_stage(main)
