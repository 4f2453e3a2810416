"""Run a policy in a gymnasium MuJoCo env and record the transitions in D4RL layout.

Row t holds the observation before step t, the action taken, the reward, the
next observation, `terminals` (the env terminated) and `timeouts` (the episode
was truncated at its step limit), plus `infos/qpos` and `infos/qvel` of the
state before the step, and `infos/action_log_probs` when the policy returns
(action, log-probability). Episodes end where gymnasium's env says: `terminated`,
or `truncated` by its `TimeLimit` at `max_episode_steps`. The first reset is
seeded; the env's own generator then seeds every later reset, so one seed fixes
the whole dataset. The last episode is cut where the row budget ends: flagged as
a timeout by default, or, with `flag_last=False`, flagged neither way as in
D4RL's own files.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dtrepro.agent.envs import make_env
from dtrepro.data.d4rl import D4RLData
from dtrepro.registry.datasets import TIME_LIMIT
from dtrepro.runtime.progress import progress as progress_bar

Policy = Callable[[np.ndarray], "np.ndarray | tuple[np.ndarray, float]"]


def rollout(
    env_id: str,
    policy: Policy,
    rows: int,
    seed: int,
    max_episode_steps: int = TIME_LIMIT,
    progress: bool = False,
    flag_last: bool = True,
) -> D4RLData:
    """Collect `rows` transitions."""
    env = make_env(env_id, max_episode_steps)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    nq, nv = env.unwrapped.model.nq, env.unwrapped.model.nv
    out = {
        "observations": np.empty((rows, obs_dim), np.float32),
        "next_observations": np.empty((rows, obs_dim), np.float32),
        "actions": np.empty((rows, act_dim), np.float32),
        "rewards": np.empty(rows, np.float32),
        "terminals": np.zeros(rows, bool),
        "timeouts": np.zeros(rows, bool),
        "infos/qpos": np.empty((rows, nq), np.float32),
        "infos/qvel": np.empty((rows, nv), np.float32),
    }
    log_probs, has_log_probs = np.empty(rows, np.float32), False
    data = env.unwrapped.data
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    bar = progress_bar(range(rows), desc=f"rollout {env_id}", unit="step", shown=progress)
    for row in bar:
        out["infos/qpos"][row], out["infos/qvel"][row] = data.qpos, data.qvel
        action = policy(obs)
        if isinstance(action, tuple):
            (action, log_probs[row]), has_log_probs = action, True
        action = np.asarray(action, dtype=np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += reward
        out["observations"][row], out["next_observations"][row] = obs, next_obs
        out["actions"][row], out["rewards"][row] = action, reward
        out["terminals"][row] = terminated
        out["timeouts"][row] = truncated and not terminated
        if terminated or truncated:
            bar.set_postfix(last_return=f"{episode_return:.0f}", refresh=False)
            obs, _ = env.reset()
            episode_return = 0.0
        else:
            obs = next_obs
    env.close()
    if flag_last:
        out["timeouts"][-1] = not out["terminals"][-1]
    if has_log_probs:
        out["infos/action_log_probs"] = log_probs
    return D4RLData(out, {"env_id": env_id, "seed": seed})
