"""Objectives: one module per objective, chosen by `config.objective` through the registry."""

from ssljax.objectives.base import DATA_AXIS, LossAux, Objective, build, get, names, register

# Importing the modules registers them.
from ssljax.objectives import simclr  # noqa: F401  isort: skip

__all__ = ["DATA_AXIS", "LossAux", "Objective", "build", "get", "names", "register"]
