"""The headline model's evaluation episodes as short looping videos: one per target, to watch DT obey the return
it is asked for.

Each video is the first episode the evaluation scored at that target: reset seed `eval.seed`, the same
checkpoint, device and precision, so the same actions (a single episode acts as in the batched evaluation,
return for return: tests/test_evaluate.py). Its actions are recorded, then replayed in an env that renders
offscreen every `STRIDE`-th step (MuJoCo through EGL: a GPU's, or Mesa's software EGL on a CPU; `MUJOCO_GL`
chooses, `egl` unless set). The replay's return is checked against the evaluation's record of that episode
before anything is written. Frames are an animated WebP (Pillow): it loops and plays offline in Chromium and
Firefox, a few hundred KB to under 2 MB for a 1,000-step episode.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dtrepro.agent.device import autocast_dtype, pick_device
from dtrepro.agent.envs import make_env
from dtrepro.agent.episodes import run_episodes
from dtrepro.agent.policy import policy_from_checkpoint
from dtrepro.params import EvalParams
from dtrepro.registry.scores import normalized_score, reference_scores
from dtrepro.runtime.atomic import atomic_output, write_json
from dtrepro.runtime.errors import DtreproError

SIZE = (320, 240)  # width, height: the motion stays readable, a frame stays small
STRIDE = 4  # a frame every 4 env steps: 32 ms of Hopper's time, shown at that pace


def replay(
    env_id: str, seed: int, actions: list[np.ndarray], max_steps: int
) -> tuple[list[Image.Image], float, int, float]:
    """The frames (every STRIDE-th step, and the last), the return and the length of the episode that `actions`
    (one array per step) make from reset seed `seed`, and the env's seconds per step."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = make_env(env_id, max_steps, render_mode="rgb_array", width=SIZE[0], height=SIZE[1])
    try:
        env.reset(seed=seed)
        frames, total = [Image.fromarray(env.render())], 0.0
        for t, action in enumerate(actions):
            _, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            if t % STRIDE == STRIDE - 1 or terminated or truncated or t == len(actions) - 1:
                frames.append(Image.fromarray(env.render()))
        dt = env.unwrapped.dt
    except Exception as err:  # MuJoCo's renderer: no EGL or OSMesa library, no display
        raise DtreproError(
            f"MuJoCo could not render {env_id} offscreen ({type(err).__name__}: {' '.join(str(err).split())[:160]}). "
            f"Install Mesa's software EGL (Debian: apt-get install libegl-mesa0 libgbm1 libgl1-mesa-dri), or set "
            f"MUJOCO_GL=osmesa with libosmesa6 (the README's set-up step)."
        ) from None
    finally:
        env.close()
    return frames, total, len(actions), dt


def recorded_returns(episodes_csv: Path) -> dict[float, float]:
    """The evaluation's return of the first episode at each target of `last.pt`, by target."""
    with open(episodes_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["checkpoint"] == "last" and r["episode"] == "0"]
    return {float(r["target"]): float(r["return"]) for r in rows}


def render_episodes(checkpoint: Path, episodes_csv: Path, params: EvalParams, out_dir: Path, *, dataset: str) -> dict:
    """One video per target of `checkpoint`'s first evaluation episode, and `videos.json`: each one's caption
    (target, seed, return, normalised score, length) and file."""
    device = pick_device(params.run.device)
    policy, ckpt = policy_from_checkpoint(checkpoint, device)
    policy.amp_dtype = autocast_dtype(device, params.amp)
    refs = reference_scores(ckpt.ref_scores, dataset)[:2]
    recorded, videos = recorded_returns(episodes_csv), []
    out_dir.mkdir(parents=True, exist_ok=True)
    for target in params.targets:
        actions: list[np.ndarray] = []
        result = run_episodes(policy, params.env_id, [params.seed], target, params.max_steps, record=actions)
        frames, total, length, dt = replay(params.env_id, params.seed, [a[0] for a in actions], params.max_steps)
        if total != result.returns[0] or recorded.get(float(target)) != total:
            raise DtreproError(
                f"The episode at target {target:g} returned {total!r} when rendered, but the evaluation recorded "
                f"{recorded.get(float(target))!r} in {episodes_csv}: it ran on another device or precision, or "
                f"with other params. Run the evaluation again (dvc repro), then the render stage."
            )
        name = f"target_{target:g}.webp"
        with atomic_output(out_dir / name) as tmp:
            frames[0].save(tmp, format="WEBP", save_all=True, append_images=frames[1:], duration=dt * STRIDE * 1000,
                           loop=0, quality=60, method=4)  # fmt: skip
        score = float(normalized_score(np.array([total]), params.env_id, refs)[0])
        videos.append(dict(target=target, seed=params.seed, normalized_score=score, length=length, file=name))
        videos[-1]["return"] = total
    write_json(out_dir / "videos.json", {"checkpoint": str(checkpoint), "env_id": params.env_id, "videos": videos})
    return {"videos": videos}
