"""Which device and which autocast precision a stage runs with."""

from __future__ import annotations

import torch

from dtrepro.errors import DtreproError


def pick_device(name: str, param: str = "train.device") -> torch.device:
    """`auto` is CUDA when present, else the CPU; asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DtreproError(f"{param} is {name!r} but CUDA is not available here; use 'auto' or 'cpu'.")
    return torch.device(name)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the device has it, else fp16 (with a grad scaler in training), None when AMP is off."""
    if not amp:
        return None
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
