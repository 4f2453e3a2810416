"""Which device and which autocast precision a stage runs with."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from dtrepro.runtime.errors import DtreproError
from dtrepro.runtime.threads import cpu_flags


def pick_device(name: str, param: str = "run.device") -> torch.device:
    """`auto` is CUDA when present, else the CPU; asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DtreproError(f"{param} is {name!r} but CUDA is not available here; use 'auto' or 'cpu'.")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DtreproError(
            f"{param} is {name!r}, but this machine has {torch.cuda.device_count()} GPU(s), cuda:0 and on; use "
            f"'auto', 'cuda' or an index below the count (CUDA_VISIBLE_DEVICES renumbers them from 0)."
        )
    return device


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), by the flags of `cpuinfo`; where it does
    not, bf16 is emulated, slower than float32."""
    flags = cpu_flags(Path(cpuinfo))
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def autocast_dtype(device: torch.device, amp: bool | str) -> torch.dtype | None:
    """The autocast precision for `amp` (train.amp, eval.amp): None (float32) when false; when true, bf16 where
    the device has it, else fp16 (with a grad scaler in training); `auto`, as true on GPUs and on CPUs with native
    bf16, float32 on other CPUs."""
    if amp is False:
        return None
    if device.type == "cpu":
        return torch.bfloat16 if amp is True or cpu_has_native_bf16() else None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
