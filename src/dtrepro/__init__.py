"""dtrepro: a cached, containerised reproducibility pipeline for the Decision Transformer on D4RL and Minari."""

from dtrepro.cpus import set_thread_defaults

__version__ = "0.1.0"

# before any module of the package imports torch: OpenMP reads its thread settings once, when torch loads it
set_thread_defaults()
