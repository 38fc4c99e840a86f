"""Objectives: one module per objective, chosen by `config.objective` through the registry of
`ssljax.interface`. Importing this package registers every bundled objective; `build`, `get` and
`names` are the registry's, handed on for `ssljax.objectives.build(config)`, and `restore_model`
builds a saved run's objective with its trained state."""

from __future__ import annotations

from typing import Any

import ml_collections

from ssljax import workdir as workdir_lib
from ssljax.interface import Objective, build, get, names

# Importing the modules registers them.
from ssljax.objectives import simclr  # noqa: F401  isort: skip
from ssljax.objectives import byol  # noqa: F401  isort: skip
from ssljax.objectives import vicreg  # noqa: F401  isort: skip
from ssljax.objectives import rotation  # noqa: F401  isort: skip
from ssljax.objectives import patch_placement  # noqa: F401  isort: skip
from ssljax.objectives import supervised  # noqa: F401  isort: skip
from ssljax.objectives import moco_v3  # noqa: F401  isort: skip
from ssljax.objectives import barlow_twins  # noqa: F401  isort: skip
from ssljax.objectives import mae  # noqa: F401  isort: skip
from ssljax.objectives import dino  # noqa: F401  isort: skip
from ssljax.objectives import swav  # noqa: F401  isort: skip
from ssljax.objectives import gpt  # noqa: F401  isort: skip
from ssljax.objectives import bert  # noqa: F401  isort: skip
from ssljax.objectives import clip  # noqa: F401  isort: skip
from ssljax.objectives import finetune  # noqa: F401  isort: skip



def restore_model(workdir: str, config: ml_collections.ConfigDict | None = None,
                  step: int | None = None) -> tuple[Objective, Any, Any]:
  """(objective, params, model_state) of a run's latest (or `step`'s) checkpoint, on one device.

  The state's shapes come from the checkpoint's own metadata, so neither the dataset nor the
  optimizer is rebuilt; the optimizer state is read and dropped.
  """
  config = workdir_lib.load_config(workdir) if config is None else config
  objective = build(config)
  state = workdir_lib.restore_state(workdir, step, None)
  return objective, state["params"], state["model_state"]


__all__ = ["build", "get", "names", "restore_model"]
