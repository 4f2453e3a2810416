"""dtrepro: a cached, containerised reproducibility pipeline for the Decision Transformer on D4RL and Minari."""

from dtrepro.cpus import set_thread_defaults
from dtrepro.errors import quiet_interrupts
from dtrepro.kernels import pin_blas_kernels

__version__ = "0.1.0"

# before any module of the package imports torch: OpenMP reads its thread settings once, when torch loads it
set_thread_defaults()
pin_blas_kernels()  # before numpy loads OpenBLAS: the same kernels, so the same collected data, on any x86-64
quiet_interrupts()  # a Ctrl-C while a stage script imports: one line, no traceback
