"""Objectives: one module per objective, chosen by `config.objective` through the registry."""

from ssljax.objectives.base import (
    DATA_AXIS, Family, LossAux, Monitor, Objective, TrainInput, build, get, names, register,
)

# Importing the modules registers them.
from ssljax.objectives import simclr  # noqa: F401  isort: skip
from ssljax.objectives import byol  # noqa: F401  isort: skip
from ssljax.objectives import vicreg  # noqa: F401  isort: skip
from ssljax.objectives import rotation  # noqa: F401  isort: skip
from ssljax.objectives import patch_placement  # noqa: F401  isort: skip
from ssljax.objectives import supervised  # noqa: F401  isort: skip
from ssljax.objectives import gpt  # noqa: F401  isort: skip
from ssljax.objectives import bert  # noqa: F401  isort: skip
from ssljax.objectives import clip  # noqa: F401  isort: skip

__all__ = ["DATA_AXIS", "Family", "LossAux", "Monitor", "Objective", "TrainInput", "build", "get", "names",
           "register"]
