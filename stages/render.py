"""render stage: the headline model plays its first evaluation episode at every target, rendered as a video.

dvc.yaml runs it once per dataset of params.yaml's study section, for the headline model (the first context
length, the first training seed) and its last.pt.
Reads  --checkpoint (last.pt), --episodes-csv (its evaluation: the return each video must show); params.yaml
       eval.*, data.env_version; --dataset NAME
Writes --out/target_<T>.webp (a looping video per target) and --out/videos.json (each one's return, normalised
       score, length and reset seed: the evaluation's record of that episode)
MuJoCo renders offscreen through EGL (MUJOCO_GL=egl unless set; Mesa's software EGL on a CPU).
"""

from dtrepro.runtime.stage import run_stage, setup

setup()  # threads, BLAS kernels and Ctrl-C handling, before numpy and torch load

import argparse
from pathlib import Path

from dtrepro.evaluation.render import render_episodes
from dtrepro.params import EvalParams, add_dataset_argument, add_params_argument
from dtrepro.runtime.atomic import outputs_together


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_argument(parser)
    add_dataset_argument(parser)
    parser.add_argument("--checkpoint", required=True, type=Path, help="e.g. models/D/k20-seed0/last.pt")
    parser.add_argument("--episodes-csv", required=True, type=Path, help="e.g. reports/eval/D/k20-seed0.csv")
    parser.add_argument("--out", required=True, type=Path, help="the videos' folder, e.g. results/videos/D")
    args = parser.parse_args(argv)
    params = EvalParams.from_params(args.params, args.dataset)
    with outputs_together(args.out):
        made = render_episodes(args.checkpoint, args.episodes_csv, params, args.out, dataset=args.dataset)
    for v in made["videos"]:
        print(f"render {args.dataset} target {v['target']:g}: return {v['return']:.1f}, {v['length']} steps")


if __name__ == "__main__":
    run_stage(main)
