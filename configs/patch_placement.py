"""Relative patch placement (arXiv 1505.05192). Variants: mnist5k (default), cifar10, imagenet,
smoke.

  ssljax train --config configs/patch_placement.py:mnist5k --workdir runs/patch_placement
"""

import ml_collections

from ssljax.train.defaults import apply_image_variant, check_variant, image_config, steps_per_epoch

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("patch_placement", variant, VARIANTS)
  c = image_config()
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
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # 3 x 7 + 2 x 2 + 2 x 1 = 27 px of a 28 px digit; 7 px patches go through the small stem
    # at stride 1 (the other mnist5k configs use stride 2 on whole digits).
    # Patches are cheap, so a larger batch; the whole-image features for the online probe
    # are most of a step's cost.
    c.model.stem_stride = 1
    c.patches.patch_size, c.patches.gap, c.patches.jitter = 7, 2, 1
    c.model.head_depth, c.model.head_width = 2, 256
    c.train.batch_size = 256
    c.train.steps = 600
    c.evals.knn.every = 300
    c.optim.lr, c.optim.warmup_steps = 0.1, 50
  elif variant == "cifar10":
    # 3 x 8 + 2 x 2 + 2 x 1 = 30 px of a 32 px image.
    c.patches.patch_size, c.patches.gap, c.patches.jitter = 8, 2, 1
    c.model.head_depth, c.model.head_width = 3, 1024
    c.train.batch_size = 256
    c.train.steps = 200 * steps_per_epoch(c)
  elif variant == "imagenet":
    # The paper's geometry: 96 px patches, 48 px gaps, jitter up to 7 px, which needs
    # 398 px; images are resized to 448 px (on the host) so the grid can move. ResNet-50 in
    # place of the paper's AlexNet-style network.
    c.data.image_size = 448
    c.train.batch_size = 1024
    c.train.steps = 100 * steps_per_epoch(c)
    c.optim.warmup_steps = 5 * steps_per_epoch(c)
  elif variant == "smoke":
    c.patches.patch_size, c.patches.gap, c.patches.jitter = 7, 2, 1
    c.model.head_depth, c.model.head_width = 2, 16
  c.lock()
  return c
