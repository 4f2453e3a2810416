"""The schema of params.yaml: every section as a validated, typed class, each key beside its type and bounds.

One `Params` subclass per section (in params.yaml's order: data, collect, repair, study, model, train,
eval, hf, run) names its keys with their types and ranges. Values are checked strictly and in one place: "3"
is not 3, true is not 1, "3600" is not a list of targets, and a key the class does not know (a typo) is
an error. Defaults live in params.yaml alone: a missing key or section is an error, never a silent
preset. A null key that stands for a fact of the dataset (its env, dt, reset height...) is filled in from
registry/datasets.py's FACTS, and the stage records the value it used.
"""

from __future__ import annotations

import copy
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML, YAMLError

from dtrepro.registry.datasets import COLLECTED, ENV_IDS, ENV_VERSIONS, FACTS, DatasetFile, dataset_file, lookup
from dtrepro.runtime.errors import DtreproError

PARAMS_FILE = "params.yaml"
Seed = Annotated[int, Field(ge=0, lt=2**31)]  # a seed every library takes (gymnasium's resets, numpy, torch)
MAX_EPISODES = 1000  # evaluation episodes per checkpoint and target
MAX_TARGET = 1e5  # the largest return asked for: above every locomotion env's best (HalfCheetah's ~12,000)


def _known_env(value: str | None) -> str | None:
    if value is not None and value not in ENV_IDS:
        raise ValueError(f"an env id must be one of {', '.join(ENV_IDS)}, or null for the dataset's")
    return value


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        raise ValueError("a device must be auto, cpu, cuda or cuda:N")
    return value


EnvId = Annotated[str | None, AfterValidator(_known_env)]  # null: the dataset's env
DeviceName = Annotated[str, AfterValidator(_device_name)]
RUN_VALUES = "DTREPRO_RUN_VALUES"  # set by a named run for its stages: its name and the values it started with


def read_yaml(text: str, where: str):
    """YAML text read as DVC reads params.yaml (YAML 1.2: `1e-05` is a number, `no` a string)."""
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as err:
        raise DtreproError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DtreproError(f"{path} does not exist. Run from the repository root, or pass --params PATH.")
    data = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise DtreproError(f"{path} must hold a mapping of sections, not {type(data).__name__}.")
    return data


def check_run_values(path: str | os.PathLike = PARAMS_FILE, run: dict | None = None) -> None:
    """Refuse a params file whose values are no longer those named run `run` started with (by default the run in
    `RUN_VALUES`, set for its stages): another `dvc exp run` or an editor rewrote it mid-run, and the stages would mix
    two sets of values."""
    given = os.environ.get(RUN_VALUES)
    run = run or (json.loads(given) if given else None)
    if not run:
        return
    started, now = run["values"], flatten(load_yaml(path))
    changed = sorted(k for k, v in started.items() if now.get(k, "(absent)") != v)
    if changed:
        key = changed[0]
        raise DtreproError(
            f"{path} changed while the named run '{run['name']}' was running: {key} was {started[key]!r} when it "
            f"started and is {now.get(key, '(absent)')!r} now ({len(changed)} value(s) differ; another `dvc exp run` "
            f"or an editor wrote the file). The run stopped and DVC records no stage that saw the new values as "
            f"done, so no result mixes the two sets. When the other command has finished, run `dtrepro run "
            f"{run['name']}` again: what was finished is reused."
        )


def run_values(name: str, params: dict) -> dict:
    """What named run `name` checks params.yaml against: its name and the values it started with."""
    return {"name": name, "values": flatten(params)}


def _describe(error: dict, where: str) -> str:
    key = ".".join([where, *map(str, error["loc"])]) if error["loc"] else where
    if error["type"] == "missing":
        return f"{key} is missing (every key has its value in params.yaml)"
    if error["type"] == "extra_forbidden":
        return f"{key} is not a parameter (a typo?)"
    value = error["input"]
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"{key}: {message}"
    return f"{key} is {value!r} ({type(value).__name__}): {message[0].lower()}{message[1:]}"


class Params(BaseModel):
    """One section of params.yaml; `section` is its name there."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
    section: ClassVar[str]

    @classmethod
    def from_params(
        cls, params: Mapping | str | os.PathLike = PARAMS_FILE, dataset: str | None = None, **context: Any
    ) -> Self:
        """The section of `params` (a params file, or its content) as this class, validated.

        `dataset` (a name of study.datasets) gives the values of the null keys that stand for its facts.
        `context` holds values that are not in the section (another section's object, a run's K).
        """
        where = params if not isinstance(params, Mapping) else PARAMS_FILE
        data = params if isinstance(params, Mapping) else load_yaml(params)
        section = data.get(cls.section)
        if not isinstance(section, dict):
            raise DtreproError(f"{where} has no '{cls.section}' section (a mapping of keys); the stage needs it.")
        try:
            if "dataset" in cls.model_fields:  # a section that works on the dataset itself
                context = {"dataset": dataset, **context}
            validated = cls.model_validate({**section, **context})
        except ValidationError as err:
            problems = "; ".join(_describe(e, cls.section) for e in err.errors())
            keys = ", ".join(k for k in cls.model_fields if k not in context)
            raise DtreproError(
                f"{where}: {problems}. The keys of '{cls.section}' are: {keys}; see the comments in params.yaml "
                f"for what each allows."
            ) from None
        return validated.with_dataset_facts(data, dataset)

    def with_dataset_facts(self, params: Mapping, dataset: str | None) -> Self:
        """This section with each null key that stands for a fact of the dataset (`datasets.FACTS`) filled in
        from `dataset` and `data.env_version`."""
        missing = [k for k in type(self).model_fields if k in FACTS and getattr(self, k) is None]
        if not missing:
            return self
        version = (params.get("data") or {}).get("env_version")
        if dataset is None or version not in ENV_VERSIONS:
            raise DtreproError(
                f"{self.section}.{missing[0]} is null, which means the dataset's, but the dataset is {dataset!r} "
                f"and data.env_version {version!r} (one of {list(ENV_VERSIONS)}). Name the dataset (the stage's "
                f"--dataset), set data.env_version, or set {self.section}.{missing[0]} itself."
            )
        known = lookup(dataset)
        return self.model_copy(update={k: FACTS[k](known.name, version) for k in missing})


class DownloadParams(Params):
    """`data`: how the datasets of study.datasets are got (the source stage; D4RL's by download)."""

    section = "data"
    dataset: str  # the name in study.datasets (not in the section: the stage's --dataset)
    env_version: Literal[ENV_VERSIONS]  # the gymnasium env version to train and evaluate on (v4: closest to D4RL's)
    url: str | None  # overrides the URL of the one D4RL dataset studied: http(s)://, file:// or a local path
    d4rl_server: bool  # try D4RL's own server first; false: only the mirrors (a machine with no internet)
    minari_remote: bool  # a Minari id not in the local Minari folder is downloaded through Minari's remote
    mirrors: list[str]  # base URLs or folders holding D4RL's files under D4RL's own paths, tried in order
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None  # the one D4RL dataset studied must have it
    check_sha256: bool  # false: accept a file whose size or hash differs from the published (a copy you changed)
    retries: Annotated[int, Field(ge=1)]  # attempts in a row without progress before giving up
    timeout_s: Annotated[float, Field(gt=0)]  # connect / read time-out of one attempt
    give_up_after_s: Annotated[float, Field(gt=0)]  # stop retrying after this long without receiving a byte
    deadline_s: Annotated[float, Field(gt=0)]  # the whole download must finish within this

    @property
    def file(self) -> DatasetFile:
        return dataset_file(self.dataset)

    @property
    def sources(self) -> list[str]:
        """Where to fetch from, in order: data.url if set, else D4RL's own URL (unless data.d4rl_server is
        false), then each mirror's copy."""
        if self.url:
            return [self.url]
        path = self.file.path
        return [self.file.url] * self.d4rl_server + [
            f"{m.rstrip('/')}/{path}" if urllib.parse.urlparse(m).scheme else str(Path(m) / path) for m in self.mirrors
        ]

    @property
    def expected(self) -> tuple[int | None, str | None]:
        """(size, SHA-256) the file must have: data.sha256 if set, else the dataset's published ones."""
        if not self.check_sha256:
            return None, None
        if self.sha256:
            return None, self.sha256.lower()
        return self.file.bytes, self.file.sha256


class CollectParams(Params):
    """`collect`: how a dataset named collected-<env>-<kind> is made, as D4RL made that kind (collect/)."""

    section = "collect"
    dataset: str  # the name in study.datasets, collected-<env>-<kind> (not in the section: the stage's --dataset)
    env_id: EnvId  # null: the dataset's env
    seed: Seed
    steps: Annotated[int, Field(ge=1)]  # transitions to roll out per policy (D4RL's medium sets hold 1,000,000)
    layout: Literal["v2", "v0"]  # v2: with timeouts and infos/qpos, qvel, action_log_probs; v0: without
    band_low: Annotated[float, Field(ge=0)]  # the behaviour policy: the first whose D4RL-normalised score
    band_high: float  # lies in [band_low, band_high] ("medium": about a third of expert)
    expert_band_low: float  # the expert policy (kinds expert, medium-expert): the first whose score lies in
    expert_band_high: float  # [expert_band_low, expert_band_high]
    # the kind mixed: one policy per band [low, high], the first ARS meets in it, in any order
    mixed_bands: list[Annotated[list[float], Field(min_length=2, max_length=2)]]
    max_steps: Annotated[int, Field(ge=1)]  # env steps of training allowed before giving up with an error
    restart_steps: Annotated[int, Field(ge=1)]  # env steps one ARS run may take before a fresh one starts
    max_spread: Annotated[float, Field(gt=0)]  # a band's policy: std of its evaluation scores at most this
    eval_episodes: Annotated[int, Field(ge=1)]  # seeded episodes that score the policy after every iteration
    action_noise: Annotated[float, Field(gt=0)]  # std of the Gaussian exploration noise of the rollouts
    max_episode_steps: Annotated[int, Field(ge=1)]
    directions: Annotated[int, Field(ge=1)]  # ARS: random directions per iteration
    top: Annotated[int, Field(ge=1)]  # ARS: best directions used in the update
    step_size: Annotated[float, Field(gt=0)]  # ARS: learning rate
    exploration: Annotated[float, Field(gt=0)]  # ARS: std of the parameter perturbations
    reward_shift: float | None  # ARS: subtracted from each training reward (null: the env's alive bonus)

    @model_validator(mode="after")
    def _consistent(self):
        if lookup(self.dataset).source != "collect":
            raise ValueError(f"{self.dataset!r} is not a dataset made here ({COLLECTED}-<env>-<kind>)")
        for low, high in (("band_low", "band_high"), ("expert_band_low", "expert_band_high")):
            if getattr(self, high) <= getattr(self, low):
                raise ValueError(f"{low}={getattr(self, low)} and {high}={getattr(self, high)} do not make a band")
        if self.kind == "mixed" and not self.mixed_bands:
            raise ValueError("mixed_bands is empty: the kind mixed needs at least one score band")
        for low, high in self.mixed_bands:
            if high <= low:
                raise ValueError(f"mixed_bands: [{low}, {high}] is not a band (the first bound must be the lower)")
        if self.top > self.directions:
            raise ValueError(f"top={self.top} must be at most directions={self.directions}")
        return self

    @property
    def kind(self) -> str:
        return lookup(self.dataset).kind


class BoundaryRules(Params):
    """`repair`'s physical facts about the env the data came from: where episodes end (data/boundaries.py).
    null: the dataset's env's (registry/datasets.py's FAMILIES)."""

    section = "repair"
    max_episode_steps: Annotated[int, Field(ge=1)]  # the envs' time limit: an episode has at most this many rows
    dt: Annotated[float, Field(gt=0)] | None  # seconds per env step (Hopper: frame_skip 4 x 0.002)
    reset_height: float | None  # torso height of a reset state (Hopper 1.25)
    reset_noise: Annotated[float, Field(ge=0)] | None  # every other coordinate and velocity within this of zero
    continuity_tolerance: Annotated[float, Field(ge=0)] | None  # a position jump beyond the velocities: a break
    velocity_clip: Annotated[float, Field(gt=0)]  # observations clip velocities here; clipped ones are not used


class RepairParams(BoundaryRules):
    """`repair`: the boundary rules and the checks of values (the repair stage)."""

    action_low: float
    action_high: float
    action_tolerance: Annotated[float, Field(ge=0)]  # actions this far outside the bounds are clipped; further: error
    max_abs_observation: Annotated[float, Field(gt=0)]  # refuse states beyond this (damaged data)
    max_abs_reward: Annotated[float, Field(gt=0)]  # refuse per-step rewards beyond this


@dataclass(frozen=True)
class Run:
    """One model of the study; its files carry `name`, k<K>-seed<S>."""

    context_len: int
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.context_len}-seed{self.seed}"


class StudyParams(Params):
    """`study`: one model per (dataset, context length, seed); the first context length is the headline's."""

    section = "study"
    datasets: Annotated[list[str], Field(min_length=1)]  # D4RL names, collected-<env>-<kind>, or Minari ids
    context_lens: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]  # K: timesteps per window
    seeds: Annotated[list[Seed], Field(min_length=1)]  # training seeds

    @model_validator(mode="after")
    def _no_repeats(self):
        for key in ("datasets", "context_lens", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} lists a value twice: {values}")
        for name in self.datasets:
            try:
                lookup(name)
            except DtreproError as err:
                raise ValueError(str(err)) from None
        return self

    @property
    def runs(self) -> list[Run]:
        return [Run(k, s) for k in self.context_lens for s in self.seeds]


class ModelParams(Params):
    """`model`: the Decision Transformer's size (agent/model.py)."""

    section = "model"
    embed_dim: Annotated[int, Field(ge=1)]
    layers: Annotated[int, Field(ge=1)]
    heads: Annotated[int, Field(ge=1)]  # embed_dim must be a multiple
    dropout: Annotated[float, Field(ge=0, lt=1)]  # embeddings, attention weights and residuals, as GPT's
    activation: Literal["gelu", "relu", "gelu_new"]  # the MLP's: GPT's gelu, DT's own relu (transformers' default)

    @model_validator(mode="after")
    def _heads_divide_embed_dim(self):
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be a multiple of heads={self.heads}")
        return self


class RunParams(Params):
    """`run`: how stages run, which changes no result (no stage lists it in its params): retrains nothing."""

    section = "run"
    device: DeviceName  # auto: CUDA when present, else the CPU (training and evaluation)
    log_every: Annotated[int, Field(ge=1)]  # training steps between the log's rows


class TrainParams(Params):
    """`train`: the optimisation (training/loop.py), with the `model` and `run` sections inside."""

    section = "train"
    model: ModelParams
    run: RunParams
    batch_size: Annotated[int, Field(ge=1)]  # global: split over the processes under torchrun
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    warmup_steps: Annotated[int, Field(ge=0)]  # linear warm-up of the learning rate
    lr_decay: Literal["none", "cosine"]  # after warm-up: constant, or a cosine down to 10% of lr at the last step
    ema_decay: Annotated[float, Field(ge=0, lt=1)]  # 0: checkpoints hold the step's weights; else their running average
    steps: Annotated[int, Field(ge=1)]
    grad_clip: Annotated[float, Field(gt=0)]
    return_scale: Annotated[float, Field(gt=0)]  # returns-to-go are divided by this
    amp: bool | Literal["auto"]  # auto: bf16 autocast on GPUs and CPUs with native bf16, else float32
    compile: bool  # torch.compile the model
    checkpoint_every: Annotated[int, Field(ge=1)]  # steps between resume states
    eval_every: Annotated[int, Field(ge=1)]  # steps between the evaluations that choose best.pt
    eval_episodes: Annotated[int, Field(ge=1)]  # episodes of those evaluations
    eval_target: float | None  # their target return (null: the DT paper's high one for the env)
    env_id: EnvId  # null: the dataset's env at data.env_version

    @classmethod
    def from_params(cls, params=PARAMS_FILE, dataset=None, **context) -> Self:
        sections = {"model": ModelParams.from_params(params), "run": RunParams.from_params(params)}
        return super().from_params(params, dataset, **sections, **context)

    @property
    def shaping(self) -> dict:
        """The values that shape what is learnt (all but `run`): the resume fingerprint's params."""
        return self.model_dump(exclude={"run"})


class EvalParams(Params):
    """`eval`: the evaluate stage (every model's last.pt and best.pt), and the report's statistics."""

    section = "eval"
    run: RunParams
    env_id: EnvId  # null: the dataset's env at data.env_version
    episodes: Annotated[int, Field(ge=1, le=MAX_EPISODES)]  # per checkpoint and target
    seed: Seed  # episode i is reset with seed + i
    targets: Annotated[list[float], Field(min_length=1)] | None  # returns asked for; null: the env's DT paper ones
    max_steps: Annotated[int, Field(ge=1)]  # the envs' time limit
    amp: bool | Literal["auto"]  # as train.amp, in the forward
    bootstrap_resamples: Annotated[int, Field(ge=100, le=100_000)]  # for the 95% CIs; memory: resamples x episodes

    @classmethod
    def from_params(cls, params=PARAMS_FILE, dataset=None, **context) -> Self:
        return super().from_params(params, dataset, run=RunParams.from_params(params), **context)

    @field_validator("targets")
    @classmethod
    def _distinct_targets(cls, targets: list[float] | None) -> list[float] | None:
        """Each target a return the envs can give, with a metrics key of its own (`{target:g}`)."""
        for t in targets or ():
            if not abs(t) <= MAX_TARGET:
                raise ValueError(f"a target must be a return within ±{MAX_TARGET:g}, not {t:g}")
        if len({f"{t:g}" for t in targets or ()}) < len(targets or ()):
            raise ValueError(
                "targets must differ, each with a metrics key of its own (a repeated target would pool the same "
                "episodes twice; targets closer than six significant digits share a key)"
            )
        return targets

    @property
    def episode_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


HUB_DIR = "hub"  # the folder of Hugging Face model folders, a dep of the hub stages


def _hub_folder(value: str) -> str:
    path = Path(value)
    if path.is_absolute() or len(path.parts) < 2 or path.parts[0] != HUB_DIR or ".." in path.parts:
        raise ValueError(
            f"a model must be a folder inside {HUB_DIR}/ (DVC tracks that folder for the hub stages), e.g. "
            f"{HUB_DIR}/hopper-medium from `huggingface-cli download edbeeching/decision-transformer-gym-hopper-medium "
            f"--local-dir {HUB_DIR}/hopper-medium`"
        )
    return path.as_posix()


class HubParams(Params):
    """`hf`: transformers DecisionTransformerModel folders scored under the eval section's protocol, as extra rows
    of their dataset's report (the hub stage; docs/huggingface.md)."""

    section = "hf"
    models: list[Annotated[str, AfterValidator(_hub_folder)]]  # `save_pretrained` folders under hub/
    dataset: str | None  # the study dataset they were trained on: its env, reference scores and row; null: the first
    state_mean: list[float] | None  # what states were normalised with; null: the dataset's own (the Hub's gym models)
    state_std: list[float] | None  # null: the dataset's own
    return_scale: Annotated[float, Field(gt=0)]  # returns-to-go were divided by this (the Hub's gym models: 1000)
    context_len: Annotated[int, Field(ge=1)]  # the window they were trained with (the Hub's gym models: 20)

    @model_validator(mode="after")
    def _stats_together(self):
        pair = (self.state_mean, self.state_std)
        if pair != (None, None) and (None in pair or len(pair[0]) != len(pair[1])):
            raise ValueError("state_mean and state_std go together: both null, or both lists of one length")
        if min(self.state_std or [1]) <= 0:
            raise ValueError("every state_std must be positive")
        return self

    def dataset_of(self, study: StudyParams) -> str:
        return self.dataset or study.datasets[0]


SECTIONS = ("data", "collect", "repair", "study", "model", "train", "eval", "hf", "run")  # params.yaml's, a class each


def check_params(study: StudyParams, params: Mapping) -> None:
    """What no one section can check: every section is one the stages read (a typo such as `trian:` would
    be ignored), hf.dataset one of the study's, and data.url and data.sha256, which stand for one D4RL file, have
    one D4RL dataset to apply to."""
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise DtreproError(
            f"params.yaml has the section '{unknown[0]}', which no stage reads (a typo?); its values would be ignored. "
            f"The sections are: {', '.join(SECTIONS)}."
        )
    hf = HubParams.from_params(params)
    if hf.models and hf.dataset_of(study) not in study.datasets:
        raise DtreproError(
            f"hf.dataset is {hf.dataset!r}, which study.datasets ({', '.join(study.datasets)}) does not hold: the "
            f"models of hf.models are scored on their dataset's env, beside its models, with its state statistics. "
            f"Add it to study.datasets, or set hf.dataset to the one they were trained on."
        )
    downloads = [name for name in study.datasets if lookup(name).source == "download"]
    for key in ("url", "sha256"):
        if (params.get("data") or {}).get(key) and len(downloads) != 1:
            raise DtreproError(
                f"data.{key} is set, but study.datasets downloads {len(downloads)} D4RL datasets "
                f"({', '.join(downloads) or 'none: data.url applies to D4RL names only'}) and data.{key} stands "
                f"for one file. Study one D4RL dataset with data.{key}, or set data.{key}: null (and give the folder "
                f"of several in data.mirrors)."
            )


def add_run_arguments(parser) -> None:
    """`--dataset`, `--context-len` and `--seed`: which run of the study a stage script works on."""
    add_dataset_argument(parser)
    parser.add_argument("--context-len", type=int, required=True, help="the run's K, timesteps per window")
    parser.add_argument("--seed", type=int, required=True, help="the run's training seed")


def merge(base: dict, overlay: dict, where: str = "") -> dict:
    """`base` with `overlay`'s values put in, recursively; an overlay key unknown to `base` is an error."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        dotted = f"{where}{key}"
        if key not in out:
            raise DtreproError(
                f"Override '{dotted}' names no parameter of params.yaml (a typo?). Known keys here: {sorted(out)}."
            )
        if isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = merge(out[key], value, f"{dotted}.")
        else:
            out[key] = value
    return out


def flatten(params: dict, where: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} as {'a.b': 1}: the keys that `dvc exp run -S` sets."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{where}{key}."))
        else:
            out[f"{where}{key}"] = value
    return out


def add_params_argument(parser) -> None:
    """`--params`: the params file a stage script reads."""
    parser.add_argument("--params", default=PARAMS_FILE, help=f"params file (default: {PARAMS_FILE})")


def add_dataset_argument(parser) -> None:
    """`--dataset`: the name in study.datasets a stage script works on."""
    parser.add_argument("--dataset", required=True, help="a name of study.datasets, e.g. hopper-medium-v2")
