"""Objectives: one module per objective, chosen by `config.objective` through the registry of
`ssljax.interface`. Importing this package registers every bundled objective; `build`, `get` and
`names` are the registry's, handed on for `ssljax.objectives.build(config)`."""

from ssljax.interface import build, get, names

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
from ssljax.objectives import finetune  # noqa: F401  isort: skip

__all__ = ["build", "get", "names"]
