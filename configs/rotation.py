"""Rotation prediction, RotNet (arXiv 1803.07728). Variants: mnist5k (default), cifar10,
imagenet, smoke.

  ssljax train --config configs/rotation.py:mnist5k --workdir runs/rotation
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import apply_image_variant, check_variant, image_config, steps_per_epoch

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("rotation", variant, VARIANTS)
  c = image_config()
  c.objective = "rotation"
  # The 4-way classifier on the pooled encoder features: depth 1 is one linear layer, as on
  # the paper's NIN; deeper heads put MLP layers (BN + ReLU) in between.
  c.model.head_depth = 1
  c.model.head_width = 0  # hidden width when head_depth > 1
  c.augment = augment.crop_and_flip(crop_scale=(0.5, 1.0))
  # SGD with momentum 0.9 and weight decay 5e-4, as in the paper; cosine decay here in place
  # of the paper's step schedule.
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "sgd", 0.1, "none", 5e-4
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # Each step sees 4 x 64 images. Digits are not mirror-symmetric: no flip.
    c.model.head_depth, c.model.head_width = 2, 256
    c.augment = augment.crop_and_flip(crop_scale=(0.5, 1.0), flip_p=0.0)
    c.train.batch_size = 64
    c.train.steps = 400
    c.evals.knn.every = 200
    c.optim.lr, c.optim.warmup_steps = 0.1, 40
  elif variant == "cifar10":
    # The paper's CIFAR-10 optimiser (SGD, batch 128, lr 0.1, momentum 0.9, wd 5e-4, 100
    # epochs) on a ResNet-18 with the small stem in place of the paper's NIN.
    c.augment = augment.crop_and_flip(crop_scale=(0.6, 1.0))
    c.train.batch_size = 128
    c.train.steps = 100 * steps_per_epoch(c)
    c.optim.lr = 0.1
  elif variant == "imagenet":
    # The paper's ImageNet optimiser (SGD, batch 192, lr 0.01, momentum 0.9, wd 5e-4, about 35
    # epochs) on a ResNet-50 in place of the paper's AlexNet.
    c.augment = augment.crop_and_flip(crop_scale=(0.08, 1.0))
    c.augment.crop_size = 224  # square crops: a quarter turn must not change the shape
    c.train.batch_size = 192
    c.train.steps = 35 * steps_per_epoch(c)
    c.optim.lr = 0.01
  c.lock()
  return c
