"""The checkpoint format: what a trained model's `.pt` file holds, written by training and read by everyone else.

A checkpoint alone is enough to act and to be scored: the weights, the model's config, the state
normalisation, the return scale, the env and the reference scores its data carried. It holds nothing
that depends on the clock or on the machine's load. Which trainings give the same bytes (docs/pipeline.md,
"Determinism"): on the CPU, the same params, data, seed and library versions on the same processor kind
give the same bytes in bf16 at any thread count, and in float32 only at the same torch thread count (its
sums are split by thread); on GPUs nothing is promised across GPU models. The training metrics record the
device, processor and thread count, and `dtrepro verify` compares scores where bytes may differ.
Files are read with `torch.load(..., weights_only=True)`: a pickle payload is refused, never run.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, fields

import torch

from dtrepro.runtime.atomic import atomic_output
from dtrepro.runtime.errors import DtreproError

CHECKPOINTS = ("last", "best")  # the checkpoints each run keeps: the final one and the best periodic evaluation
# what torch.load raises for a file that is not a whole checkpoint: cut short, overwritten, not one at all
DAMAGED = (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


def save_torch(obj: object, path: str | os.PathLike) -> None:
    """torch.save, whole or not at all, through memory: the archive's inner name is fixed ("archive"), not the
    temporary file's, so equal contents give equal bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_torch(path: str | os.PathLike, device: str | torch.device = "cpu") -> object:
    """torch.load of weights and plain data only; DAMAGED errors propagate."""
    return torch.load(path, map_location=device, weights_only=True)


@dataclass(frozen=True)
class Checkpoint:
    """One trained model: `last.pt` and `best.pt` of a run are each one of these."""

    model: dict  # the state dict
    config: dict  # ModelConfig's fields
    state_mean: torch.Tensor
    state_std: torch.Tensor
    return_scale: float
    step: int  # training steps taken
    env_id: str  # the env it was trained for
    ref_scores: dict  # ref_min_score, ref_max_score, ref_scores_source: the normalisation its data carried
    train_seed: int

    def save(self, path: str | os.PathLike) -> None:
        save_torch(asdict(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "Checkpoint":
        """The checkpoint at `path`; one paragraph if it is missing, damaged or not a checkpoint of this format."""
        if not os.path.isfile(path):
            raise DtreproError(f"Checkpoint {path} does not exist. Run the train stage first (dvc repro).")
        try:
            content = load_torch(path, device)
        except DAMAGED as err:
            raise DtreproError(
                f"Checkpoint {path} cannot be loaded ({type(err).__name__}: {' '.join(str(err).split())[:200]}); it "
                f"is damaged or cut short. Delete it and run the train stage again."
            ) from None
        return cls.from_content(content, path)

    @classmethod
    def from_content(cls, content: object, where: str | os.PathLike = "<memory>") -> "Checkpoint":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if not isinstance(content, dict) or n not in content]
        if missing:
            what = f"a {type(content).__name__}" if not isinstance(content, dict) else f"a dict without {missing}"
            raise DtreproError(
                f"{where} is not a checkpoint of this pipeline: it holds {what}, where a checkpoint holds "
                f"{', '.join(names)}. Use a last.pt or best.pt that the train stage wrote, or run it again."
            )
        kinds = {"model": dict, "config": dict, "state_mean": torch.Tensor, "state_std": torch.Tensor, "step": int}
        wrong = [n for n, kind in kinds.items() if not isinstance(content[n], kind)]
        if wrong:
            raise DtreproError(
                f"{where} is not a checkpoint of this pipeline: its {', '.join(wrong)} have the wrong types. Use a "
                f"last.pt or best.pt that the train stage wrote, or run it again."
            )
        return cls(**{n: content[n] for n in names})
