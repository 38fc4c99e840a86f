"""VICReg (arXiv 2105.04906). Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/vicreg.py:mnist5k --workdir runs/vicreg
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import apply_image_variant, check_variant, image_config, steps_per_epoch

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("vicreg", variant, VARIANTS)
  c = image_config()
  c.objective = "vicreg"
  # Expander: three Linear layers, BN + ReLU between them, 8192-8192-8192 in the paper.
  c.model.expander_depth = 3
  c.model.expander_width = 8192
  c.model.expander_dim = 8192
  c.loss = ml_collections.ConfigDict()
  c.loss.sim_weight = 25.0  # lambda, invariance
  c.loss.var_weight = 25.0  # mu, variance
  c.loss.cov_weight = 1.0  # nu, covariance
  c.loss.eps = 1e-4
  # VICReg uses BYOL's augmentations, asymmetric blur and solarization included.
  c.augment = ml_collections.ConfigDict()
  c.augment.view1 = augment.default_config("byol_view1")
  c.augment.view2 = augment.default_config("byol_view2")
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "lars", 0.2, "linear", 1e-6
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # 2 x 128 views per step.
    c.model.expander_width, c.model.expander_dim = 512, 512
    c.train.batch_size = 128
    c.train.steps = 400
    c.evals.knn.every = 200
    # LARS 2.0 x 128 / 256 = 1.0 beat 0.5 x 128 / 256 (linear probe 0.899 against 0.886).
    c.optim.lr, c.optim.warmup_steps = 2.0, 40
    for view in (c.augment.view1, c.augment.view2):
      view.crop_scale = (0.3, 1.0)
      view.flip_p = 0.0  # digits are not mirror-symmetric (SimCLR's trials: flip cost 0.05 of kNN)
  elif variant == "cifar10":
    # The paper pretrains on ImageNet only; this is a common CIFAR-10 setting (ResNet-18 with
    # the small stem, a 2048-wide expander, LARS base lr 0.3, wd 1e-4, 1000 epochs). Blur is off
    # on 32 px images, as in SimCLR's CIFAR recipe.
    c.model.expander_width, c.model.expander_dim = 2048, 2048
    c.train.batch_size = 256
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.3, 1e-4, 10 * steps_per_epoch(c)
    c.augment.view1.blur_p = c.augment.view2.blur_p = 0.0
  elif variant == "imagenet":
    # The paper's recipe: ResNet-50, batch 2048, LARS base lr 0.2 x batch / 256, wd 1e-6,
    # 1000 epochs of cosine decay after 10 warmup epochs, expander 8192-8192-8192.
    c.train.batch_size = 2048
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    c.augment.view1.crop_size = c.augment.view2.crop_size = 224
  elif variant == "smoke":
    c.model.expander_width, c.model.expander_dim = 16, 16
  c.lock()
  return c
