"""The gymnasium envs the pipeline collects, trains and evaluates on."""

from __future__ import annotations

import warnings

import gymnasium as gym


def make_env(env_id: str, max_episode_steps: int, **render) -> gym.Env:
    """`env_id` cut by gymnasium's own `TimeLimit` at `max_episode_steps`: `truncated` marks the cut; `render`:
    gymnasium's render options (render_mode="rgb_array", width, height).

    The passive env checker is left out: these are gymnasium's own MuJoCo envs, stepped millions of times.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium flags Hopper-v4 as superseded by v5; v4 is deliberate
        return gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **render)
