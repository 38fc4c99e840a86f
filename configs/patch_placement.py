"""Relative patch placement (arXiv 1505.05192). Variants: mnist5k (default), cifar10, imagenet,
smoke.

  ssljax train --config configs/patch_placement.py:mnist5k --workdir runs/patch_placement
"""

import ml_collections

from ssljax.train.defaults import base_config

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = variant or "mnist5k"
  if variant not in VARIANTS:
    raise ValueError(f"unknown patch_placement variant {variant!r}; choose one of {VARIANTS}")
  c = base_config()
  c.objective = "patch_placement"
  # The 3x3 grid needs 3 * patch_size + 2 * gap + 2 * jitter pixels per side
  # (augment.patch_grid_extent).
  c.patches = ml_collections.ConfigDict()
  c.patches.patch_size = 96
  c.patches.gap = 48
  c.patches.jitter = 7
  c.patches.color_drop_p = 1.0  # the paper's colour dropping against chromatic aberration
  # The pair classifier on [f(centre), f(neighbour)]: an MLP standing in for the paper's fc
  # layers (fc6 per patch, then fc7, fc8 on the pair).
  c.model.head_depth = 3
  c.model.head_width = 4096
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "sgd", 0.1, "linear", 5e-4

  if variant == "mnist5k":
    # 3 x 7 + 2 x 2 + 2 x 1 = 27 px of a 28 px digit; 7 px patches go through the small stem
    # at stride 1 (the other mnist5k configs use stride 2 on whole digits).
    # Patches are cheap, so a larger batch; the whole-image features for the online probe
    # are most of a step's cost.
    c.model.encoder, c.model.width = "resnet18", 16
    c.patches.patch_size, c.patches.gap, c.patches.jitter = 7, 2, 1
    c.model.head_depth, c.model.head_width = 2, 256
    c.train.batch_size = 256
    c.train.steps = 600
    c.train.checkpoint_every = 100
    c.train.knn_every = 300
    c.optim.lr, c.optim.warmup_steps = 0.1, 50
  elif variant == "cifar10":
    # 3 x 8 + 2 x 2 + 2 x 1 = 30 px of a 32 px image.
    c.data.name, c.data.eval_split = "cifar10", "test"
    c.model.encoder, c.model.width = "resnet18", 64
    c.patches.patch_size, c.patches.gap, c.patches.jitter = 8, 2, 1
    c.model.head_depth, c.model.head_width = 3, 1024
    c.train.batch_size = 256
    c.train.steps = 200 * 50_000 // 256
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
  elif variant == "imagenet":
    # The paper's geometry: 96 px patches, 48 px gaps, jitter up to 7 px, which needs
    # 398 px; images are resized to 448 px (on the host) so the grid can move. ResNet-50 in
    # place of the paper's AlexNet-style network.
    c.data.name, c.data.eval_split, c.data.image_size = "imagenet2012", "validation", 448
    c.model.encoder, c.model.width, c.model.stem, c.model.dtype = "resnet50", 64, "imagenet", "bfloat16"
    c.train.batch_size = 1024
    steps_per_epoch = 1_281_167 // 1024
    c.train.steps = 100 * steps_per_epoch
    c.train.checkpoint_every = 1000
    c.train.log_every = 100
    c.optim.warmup_steps = 5 * steps_per_epoch
  elif variant == "smoke":
    c.model.encoder, c.model.width = "resnet_tiny", 4
    c.patches.patch_size, c.patches.gap, c.patches.jitter = 7, 2, 1
    c.model.head_depth, c.model.head_width = 2, 16
    c.train.batch_size = 16
    c.train.steps = 4
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.eval.probe_steps = 20
    c.optim.lr = 0.1
  c.lock()
  return c
