"""Which device and which autocast precision a stage runs with (no GPU here: CUDA's answers are mocked)."""

from __future__ import annotations

import pytest
import torch

from dtrepro.agent import device as device_module
from dtrepro.agent.device import autocast_dtype, cpu_has_native_bf16, pick_device
from dtrepro.runtime.errors import DtreproError


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_uses_bf16_on_cpus_that_compute_it_natively(monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native else None)
    assert autocast_dtype(cpu, True) == torch.bfloat16  # true forces it
    assert autocast_dtype(cpu, False) is None  # false forces float32


def test_autocast_on_gpus_is_bf16_where_supported_else_fp16(monkeypatch):
    """fp16 (with a grad scaler) on GPUs without bf16, nothing when AMP is off."""
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(cuda, True) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert autocast_dtype(cuda, True) == torch.float16


CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9B14 bf16-ready 96-Core Processor
flags\t\t: fpu avx2 avx512f avx512bw {extra}
"""


@pytest.mark.parametrize(
    "extra, native",
    [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx512_vnni", False), ("", False)],
)
def test_the_bf16_flags_are_read_from_the_flags_line_only(tmp_path, extra, native):
    """A check of the text for "bf16" (the model name above says it) or of any avx512 flag would call emulated
    bf16 native, and `amp: auto` would train slower than float32."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert cpu_has_native_bf16(str(cpuinfo)) is native
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DtreproError, match="CUDA is not available"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def test_a_gpu_index_the_machine_lacks_is_refused(monkeypatch):
    """cuda:7 on a machine of two GPUs was torch's traceback at the first tensor moved there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DtreproError, match="'cuda:7', but this machine has 2 GPU"):
        pick_device("cuda:7", "run.device")
