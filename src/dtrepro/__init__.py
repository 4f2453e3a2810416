"""dtrepro: a cached, containerised reproducibility pipeline for the Decision Transformer on D4RL and Minari.

The science (registry, data, collect, agent, training, evaluation, reporting) is what a researcher reads to
change DT; `runtime` says how a stage runs and `pipeline` drives DVC. Importing the package changes nothing
in the process: the stage scripts apply their settings (`dtrepro.runtime.stage.setup`).
"""

__version__ = "0.1.0"
