"""dtrepro: a cached, containerised reproducibility pipeline for the Decision Transformer on D4RL Hopper."""

__version__ = "0.1.0"
