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


# Training examples per epoch of the datasets the variants name.
EXAMPLES_PER_EPOCH = {"mnist5k": 4000, "cifar10": 50_000, "imagenet2012": 1_281_167}


def check_variant(objective: str, variant: str | None, variants: tuple[str, ...]) -> str:
  """`variant` ("" or None: mnist5k), or a ValueError that lists the choices."""
  variant = variant or "mnist5k"
  if variant not in variants:
    raise ValueError(f"unknown {objective} variant {variant!r}; choose one of {variants}")
  return variant


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """The dataset, encoder, logging and (for smoke) sizes that every objective's `variant`
  shares; a config calls this after its objective's defaults and then sets what differs.

  - mnist5k: ResNet-18 of width 16 with a stride-2 small stem (stages at 14, 7, 4, 2 px:
    28 px digits need no more, and it is about 4x cheaper than stride 1 on a CPU).
  - cifar10: ResNet-18 of width 64 with the small stem (SimCLR appendix B.9), test split.
  - imagenet*: ResNet-50 with the ImageNet stem in bfloat16, images resized to 256 on the host
    (configs crop 224 on the device), validation split.
  - smoke: a two-stage ResNet of width 4, 4 steps of 16 images, for tests.
  """
  if variant == "mnist5k":
    c.model.encoder, c.model.width, c.model.stem_stride = "resnet18", 16, 2
    c.train.checkpoint_every = 100
  elif variant == "cifar10":
    c.data.name, c.data.eval_split = "cifar10", "test"
    c.model.encoder, c.model.width = "resnet18", 64
    c.train.checkpoint_every, c.train.log_every = 1000, 50
  elif variant.startswith("imagenet"):
    c.data.name, c.data.eval_split, c.data.image_size = "imagenet2012", "validation", 256
    c.model.encoder, c.model.width, c.model.stem, c.model.dtype = "resnet50", 64, "imagenet", "bfloat16"
    c.train.checkpoint_every, c.train.log_every = 1000, 100
  elif variant == "smoke":
    c.model.encoder, c.model.width = "resnet_tiny", 4
    c.train.batch_size, c.train.steps = 16, 4
    c.train.log_every, c.train.checkpoint_every = 1, 2
    c.eval.probe_steps = 20
    c.optim.lr = 0.1
  else:
    raise ValueError(f"unknown variant {variant!r}")


def steps_per_epoch(c: ml_collections.ConfigDict) -> int:
  """Optimizer steps in one pass over the config's training set at its batch size."""
  return EXAMPLES_PER_EPOCH[c.data.name] // c.train.batch_size


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
