"""The config keys every objective shares; configs/<objective>.py fill in and override them."""

from __future__ import annotations

import importlib.util
import os

import ml_collections
from ml_collections import config_dict

# configs/ sits beside the package in a checkout (and in an editable install).
CONFIGS_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.objective = ""
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist5k"
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.data_dir = config_dict.placeholder(str)  # None: $SSLJAX_DATA_DIR or ~/tensorflow_datasets
  c.data.image_size = config_dict.placeholder(int)  # host resize + centre crop; None: stored size

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "resnet18"
  c.model.width = 64
  c.model.stem = "small"
  c.model.stem_stride = 1  # 2 halves every stage's resolution (small stem only)
  c.model.dtype = "float32"

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "lars"
  c.optim.lr = 0.3
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-6
  c.optim.momentum = 0.9
  c.optim.trust_coefficient = 1e-3
  c.optim.warmup_steps = 0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256
  c.train.steps = 1000
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3
  c.train.knn_every = 0  # 0: no kNN monitor during training
  c.train.probe_lr = 1e-3  # the online linear probe's Adam learning rate
  c.train.evaluate = True  # run `ssljax eval` when training ends

  c.eval = ml_collections.ConfigDict()
  c.eval.labels_per_class = 10
  c.eval.probe_l2 = (1e-4, 1e-3, 1e-2, 1e-1)  # candidates, chosen by 3-fold cross-validation
  c.eval.probe_steps = 500
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.seed = 0
  return c


def load_config(spec: str, configs_dir: str | None = None) -> ml_collections.ConfigDict:
  """The config that `ssljax train --config` would load, from Python code and notebooks.

  `spec` is "simclr", "simclr:smoke" or a path "configs/simclr.py:smoke"; a bare name is looked
  up in `configs_dir` (default: the repository's configs/ directory).
  """
  path, _, variant = spec.partition(":")
  if not path.endswith(".py"):
    path = os.path.join(configs_dir or CONFIGS_DIR, path + ".py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location(f"ssljax_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()
