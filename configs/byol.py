"""BYOL (arXiv 2006.07733). Variants: mnist5k (default), cifar10, imagenet, imagenet300, smoke.

  ssljax train --config configs/byol.py:mnist5k --workdir runs/byol
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import (apply_image_variant, check_variant, image_config, multi_crop_part,
                                   steps_per_epoch)

VARIANTS = ("mnist5k", "cifar10", "imagenet", "imagenet300", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("byol", variant, VARIANTS)
  c = image_config()
  c.objective = "byol"
  # Projector g and predictor q: Linear(4096) - BN - ReLU - Linear(256), as in the paper.
  c.model.projector_depth = 2
  c.model.projector_width = 4096
  c.model.projector_dim = 256
  c.model.predictor_depth = 2
  c.model.predictor_width = 4096
  c.loss = ml_collections.ConfigDict()
  c.loss.tau_base = 0.996  # EMA decay at step 0, cosine-increased to 1 at the last step
  # BYOL's asymmetric views (the paper's table 6).
  c.augment = ml_collections.ConfigDict()
  c.augment.view1 = augment.default_config("byol_view1")
  c.augment.view2 = augment.default_config("byol_view2")
  # LARS, base lr 0.2 x batch / 256, weight decay 1.5e-6; biases and BN excluded from both
  # (ssljax.train.optim.decay_mask).
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "lars", 0.2, "linear", 1.5e-6
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # Each step is 2 x 128 views through the online network and 2 x 128 target forwards.
    c.model.projector_width, c.model.projector_dim, c.model.predictor_width = 256, 64, 256
    c.train.batch_size = 128
    c.train.steps = 800
    c.evals.knn.every = 400
    # tau_base on the validation split at 800 steps (probe all / 10 per class / kNN): 0.99 gave
    # 0.882 / 0.654 / 0.730 and 0.96 gave 0.876 / 0.648 / 0.704. The learning rate is the one
    # that suits configs/simclr.py (LARS 2.0 at this batch).
    c.loss.tau_base = 0.99
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 4.0, 1e-6, 40
    for view in (c.augment.view1, c.augment.view2):
      view.crop_scale = (0.3, 1.0)
      view.flip_p = 0.0  # digits are not mirror-symmetric (SimCLR's trials: flip cost 0.05 of kNN)
  elif variant == "cifar10":
    # The paper pretrains on ImageNet only; this is a common CIFAR-10 setting (ResNet-18 with
    # the small stem, 1000 epochs, tau 0.99, LARS base lr 1.0, wd 1e-5) with the paper's heads.
    # Blur is off on 32 px images, as in SimCLR's CIFAR recipe.
    c.train.batch_size = 512
    c.train.steps = 1000 * steps_per_epoch(c)
    c.loss.tau_base = 0.99
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 1.0, 1e-5, 10 * steps_per_epoch(c)
    c.augment.view1.blur_p = c.augment.view2.blur_p = 0.0
  elif variant in ("imagenet", "imagenet300"):
    # The paper's recipe: ResNet-50, batch 4096, LARS with cosine decay and 10 warmup epochs;
    # 1000 epochs with base lr 0.2, wd 1.5e-6, tau_base 0.996, or the 300-epoch setting with
    # base lr 0.3, wd 1e-6, tau_base 0.99.
    c.train.batch_size = 4096
    epochs = 1000 if variant == "imagenet" else 300
    c.train.steps = epochs * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    if variant == "imagenet300":
      c.optim.lr, c.optim.weight_decay, c.loss.tau_base = 0.3, 1e-6, 0.99
    c.augment.view1.crop_size = c.augment.view2.crop_size = 224
  elif variant == "smoke":
    c.model.projector_width, c.model.projector_dim, c.model.predictor_width = 16, 8, 16
    c.loss.tau_base = 0.99
  # Multi-crop, off: --config.multi_crop.num_local=N adds N local crops beside the two views, with
  # view 1's colours and blur p 0.5, as DINO's local crops (ssljax/objectives/byol.py says how
  # they enter the loss).
  local = ml_collections.ConfigDict(c.augment.view1.to_dict())
  local.blur_p = 0.5
  multi_crop_part(c, variant, local, crop_scale=(0.05, 0.4))
  c.lock()
  return c
