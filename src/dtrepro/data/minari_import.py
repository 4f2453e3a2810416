"""Minari in and out: a Minari dataset as the pipeline's flat D4RL-layout file, and a D4RL-layout file as a
Minari dataset.

Minari (Farama's successor of D4RL; the `minari` package) stores each episode with its T+1
observations. Flattened, row t of an episode holds observation t, action t, reward t, observation
t+1 (`next_observations`), `terminals` (Minari's `terminations`) and `timeouts` (its `truncations`),
so the episodes stay exactly as Minari has them: repair validates them and finds nothing to change.
`metadata/*` names the Minari id, its version, the env spec and the reference scores the pipeline
normalises with: the dataset's own `ref_min_score`/`ref_max_score` where Minari has them, else
D4RL's constants for the env family (`ref_scores_source` says which).

Export goes through Minari's own API (`create_dataset_from_buffers`), so `minari.load_dataset`,
d3rlpy and TorchRL open what the pipeline collected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

from dtrepro.data.checksum import file_sha256, write_sidecar
from dtrepro.data.d4rl import D4RLData, read_d4rl, write_d4rl
from dtrepro.data.flags import episode_ends, episode_stats
from dtrepro.registry.datasets import env_id, family, lookup
from dtrepro.registry.scores import reference_scores
from dtrepro.runtime.atomic import atomic_folder, atomic_output, require_space, write_json
from dtrepro.runtime.errors import DtreproError

MINARI_PATH_VAR = "MINARI_DATASETS_PATH"  # Minari's own variable; its default is ~/.minari/datasets


def datasets_root() -> Path:
    """The local Minari datasets folder, as Minari itself resolves it."""
    return Path(os.environ.get(MINARI_PATH_VAR) or Path.home() / ".minari" / "datasets")


def _with_deadline(work, seconds: float, what: str):
    """Run `work()` in a thread; a DtreproError if it has not finished within `seconds`."""
    result: dict = {}

    def target():
        try:
            result["value"] = work()
        except BaseException as err:  # noqa: BLE001 -- handed to the caller below
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise DtreproError(f"{what} did not finish within data.deadline_s={seconds:g} s.")
    if "error" in result:
        raise result["error"]
    return result["value"]


def load(dataset_id: str, remote: bool, deadline_s: float):
    """The Minari dataset `dataset_id`: local, or else downloaded through Minari's remote when `remote`."""
    import minari

    root = datasets_root()
    if (root / dataset_id / "data").is_dir():
        return minari.load_dataset(dataset_id)
    advice = (
        f"Copy the dataset's folder ({dataset_id}/, with data/main_data.hdf5 and data/metadata.json) into {root} "
        f"from a machine that has it (`minari download {dataset_id}` fetches it on a connected machine), or set "
        f"{MINARI_PATH_VAR} to the folder that holds it."
    )
    if not remote:
        raise DtreproError(
            f"The Minari dataset {dataset_id} is not in the local Minari folder {root}, and data.minari_remote is "
            f"false. {advice}"
        )
    try:
        _download(dataset_id, root, deadline_s)
    except Exception as err:  # a network failure, an unknown id, the deadline: all end the same way
        raise DtreproError(
            f"The Minari dataset {dataset_id} is not in the local Minari folder {root}, and Minari's remote could "
            f"not provide it ({' '.join(str(err).split())[:300]}). {advice}"
        ) from None
    return minari.load_dataset(dataset_id)


def _download(dataset_id: str, root: Path, deadline_s: float) -> None:
    """Minari's download into a temporary folder of `root`, moved into place only when complete: what is in the
    dataset's folder already (a user's files) is never deleted or replaced, and a failure leaves nothing."""
    import minari

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".dtrepro-download-", dir=root))
    before = os.environ.get(MINARI_PATH_VAR)
    os.environ[MINARI_PATH_VAR] = str(tmp)  # Minari reads it at each call
    try:
        _with_deadline(
            lambda: minari.download_dataset(dataset_id), deadline_s, f"Downloading the Minari dataset {dataset_id}"
        )
        done, dest = tmp / dataset_id, root / dataset_id
        dest.mkdir(parents=True, exist_ok=True)
        for part in done.iterdir():
            if not (dest / part.name).exists():
                os.replace(part, dest / part.name)
    finally:
        if before is None:
            os.environ.pop(MINARI_PATH_VAR, None)
        else:
            os.environ[MINARI_PATH_VAR] = before
        shutil.rmtree(tmp, ignore_errors=True)


def _flat_box(space, what: str, dataset_id: str) -> None:
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise DtreproError(
            f"The Minari dataset {dataset_id} has {what} space {space}; the Decision Transformer here takes flat "
            f"Box spaces (a vector per step), as the MuJoCo locomotion datasets have. Use one of those."
        )


def to_d4rl(dataset, name: str) -> D4RLData:
    """Flatten a Minari dataset into D4RL's layout, episode by episode, with its provenance in the metadata."""
    spec = dataset.spec
    _flat_box(dataset.observation_space, "an observation", name)
    _flat_box(dataset.action_space, "an action", name)
    recorded = spec.env_spec.id if spec.env_spec is not None else None
    expected = env_id(name, "")
    if recorded is not None and recorded != expected:
        raise DtreproError(
            f"The Minari dataset {name} records the env {recorded}, but the pipeline trains and evaluates "
            f"{'/'.join(name.split('/')[-2:-1])} datasets of Minari on {expected} (the env Minari's MuJoCo datasets "
            f"were collected on; the second-to-last part of the id picks the env). Record the dataset on {expected}, "
            f"or use an id whose env part is that of the data."
        )
    parts: dict[str, list] = {k: [] for k in ("observations", "next_observations", "actions", "rewards")}
    parts.update(terminals=[], timeouts=[])
    for episode in dataset.iterate_episodes():
        obs = np.asarray(episode.observations, dtype=np.float32)
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(episode.actions, dtype=np.float32))
        parts["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["terminals"].append(np.asarray(episode.terminations, dtype=bool))
        parts["timeouts"].append(np.asarray(episode.truncations, dtype=bool) & ~parts["terminals"][-1])
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    metadata = dataset.storage.metadata
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    source = "minari" if ref_min is not None and ref_max is not None else "d4rl"
    if source == "d4rl":
        ref_min, ref_max = family(name).ref_scores
    return D4RLData(
        arrays,
        {
            "source": "minari",
            "dataset": name,
            "minari_id": spec.dataset_id,
            "minari_version": str(spec.minari_version),
            "minari_total_steps": int(spec.total_steps),
            "minari_total_episodes": int(spec.total_episodes),
            "env_id": recorded or expected,
            "env_spec": metadata.get("env_spec") or "",
            "algorithm": str(metadata.get("algorithm_name") or ""),
            "ref_min_score": float(ref_min),
            "ref_max_score": float(ref_max),
            "ref_scores_source": source,
        },
    )


def export(data: D4RLData, dataset_id: str, folder: str | os.PathLike, **info) -> Path:
    """Write `data` (D4RL layout, every episode flagged) as the Minari dataset `dataset_id` under `folder`,
    through Minari's own `create_dataset_from_buffers`; `info` goes to Minari's metadata (env, ref scores,
    algorithm_name, description). Returns the dataset's folder."""
    import minari
    from minari.data_collector import EpisodeBuffer

    a = data.arrays
    timeouts = a.get("timeouts", np.zeros(data.rows, bool))
    ends = episode_ends(a["terminals"], timeouts)
    starts = np.concatenate(([0], ends[:-1] + 1))
    buffers = []
    for start, end in zip(starts, ends, strict=True):
        if "next_observations" in a:  # T+1 observations: the episode's, then the one its last step led to
            observations = np.concatenate([a["observations"][start : end + 1], a["next_observations"][end : end + 1]])
        else:  # a file without them (D4RL's v0) cannot say where the last step led: that step is left out
            observations, end = a["observations"][start : end + 1], end - 1
            if end < start:
                continue
        rows = slice(start, end + 1)
        last = np.arange(start, end + 1) == end
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                observations=observations,
                actions=a["actions"][rows],
                rewards=a["rewards"][rows],
                terminations=a["terminals"][rows],
                truncations=timeouts[rows] | (last & ~a["terminals"][rows]),  # an end unflagged in the file
            )
        )
    previous = os.environ.get(MINARI_PATH_VAR)
    os.environ[MINARI_PATH_VAR] = str(Path(folder).resolve())  # Minari resolves its paths from this one
    try:
        with warnings.catch_warnings():  # Minari asks for an author, an e-mail and a code link: we have none
            warnings.filterwarnings("ignore", category=UserWarning, module="minari")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="gymnasium")  # v4 is deliberate
            minari.create_dataset_from_buffers(dataset_id, buffers, **info)
    finally:
        if previous is None:
            os.environ.pop(MINARI_PATH_VAR)
        else:
            os.environ[MINARI_PATH_VAR] = previous
    return Path(folder) / dataset_id


def minari_id(name: str) -> str:
    """The Minari id a dataset of the study is exported under: its own for a Minari dataset, else
    `d4rl/<env>/<kind>-<version>` (D4RL's files) or `dtrepro/<env>/<kind>-v0` (collected here)."""
    found = lookup(name)
    if found.source == "minari":
        return name
    if found.source == "download":
        return f"d4rl/{found.env}/{found.kind}-{found.version}"
    return f"dtrepro/{found.env}/{found.kind}-v0"


def minari_to_files(params, output, policy_path, metrics_path) -> dict:
    """The source stage's outputs for a Minari id: the flat file and its hash, a note on the policy, metrics."""
    dataset = load(params.dataset, params.minari_remote, params.deadline_s)
    data = to_d4rl(dataset, params.dataset)
    meta = data.metadata
    with atomic_output(output) as tmp:
        write_d4rl(tmp, data)
        digest = file_sha256(tmp)
        write_json(
            policy_path,
            {"source": "minari", "algorithm": meta["algorithm"], "policy": None, "minari_id": params.dataset},
        )
        ends = episode_ends(data.arrays["terminals"], data.arrays["timeouts"])
        metrics = {
            "source": "minari",
            "dataset": params.dataset,
            **{k: meta[k] for k in ("minari_version", "env_id", "ref_min_score", "ref_max_score", "ref_scores_source")},
            "rows": data.rows,
            "dataset_episodes": len(ends),
            "minari_total_steps": meta["minari_total_steps"],
            "minari_total_episodes": meta["minari_total_episodes"],
            **episode_stats(data.arrays["rewards"], ends, prefix="dataset_episode"),
        }
        write_json(metrics_path, metrics)
        write_sidecar(output, digest)
    return {**metrics, "sha256": digest}


def export_file(path: str | os.PathLike, name: str, env: str, folder: str | os.PathLike) -> Path:
    """Write the D4RL-layout file `path` (dataset `name`, collected on `env`) as a Minari dataset in `folder`
    (a Minari datasets folder: `MINARI_DATASETS_PATH=folder` opens it), replacing what was there."""
    data = read_d4rl(path)
    refs = reference_scores(data.metadata, name)
    description = (
        f"{name} as the dtrepro pipeline got it ({data.metadata.get('source', 'download')}): every episode of its "
        f"flat D4RL-layout file, ends as its flags say. Scores normalise with ref_min_score/ref_max_score ({refs[2]})."
    )
    info = {
        "env": env,
        "algorithm_name": str(data.metadata.get("algorithm") or "unknown (D4RL does not say)"),
        "description": description,
        "ref_min_score": refs[0],
        "ref_max_score": refs[1],
        "data_format": "hdf5",
    }
    folder = Path(folder)
    # Minari's writer dies (SIGSEGV in HDF5) on a full disk: check first. Its files take about the flat file's size
    require_space(folder.parent, 2 * Path(path).stat().st_size + 2**20, f"The Minari export of {name}")
    with atomic_folder(folder) as tmp:
        export(data, minari_id(name), tmp, **info)
    return folder / minari_id(name)
