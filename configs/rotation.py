"""Rotation prediction, RotNet (arXiv 1803.07728). Variants: mnist5k (default), cifar10,
imagenet, smoke.

  ssljax train --config configs/rotation.py:mnist5k --workdir runs/rotation
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import base_config

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def light_augmentation(crop_scale=(0.5, 1.0), flip_p: float = 0.5) -> ml_collections.ConfigDict:
  """Random resized crop and horizontal flip only; every other transform off."""
  a = augment.default_config("none")
  a.crop_p, a.crop_scale, a.flip_p = 1.0, crop_scale, flip_p
  return a


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = variant or "mnist5k"
  if variant not in VARIANTS:
    raise ValueError(f"unknown rotation variant {variant!r}; choose one of {VARIANTS}")
  c = base_config()
  c.objective = "rotation"
  # The 4-way classifier on the pooled encoder features: depth 1 is one linear layer, as on
  # the paper's NIN; deeper heads put MLP layers (BN + ReLU) in between.
  c.model.head_depth = 1
  c.model.head_width = 0  # hidden width when head_depth > 1
  c.augment = light_augmentation()
  # SGD with momentum 0.9 and weight decay 5e-4, as in the paper; cosine decay here in place
  # of the paper's step schedule.
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "sgd", 0.1, "none", 5e-4

  if variant == "mnist5k":
    # The encoder of configs/simclr.py (ResNet-18 of width 16 with a stride-2 stem); each step
    # sees 4 x 64 images, half of SimCLR's 2 x 256 views. Digits are not mirror-symmetric: no flip.
    c.model.encoder, c.model.width, c.model.stem_stride = "resnet18", 16, 2
    c.model.head_depth, c.model.head_width = 2, 256
    c.augment = light_augmentation(crop_scale=(0.5, 1.0), flip_p=0.0)
    c.train.batch_size = 64
    c.train.steps = 400
    c.train.checkpoint_every = 100
    c.train.knn_every = 200
    c.optim.lr, c.optim.warmup_steps = 0.1, 40
  elif variant == "cifar10":
    # The paper's CIFAR-10 optimiser (SGD, batch 128, lr 0.1, momentum 0.9, wd 5e-4, 100
    # epochs) on a ResNet-18 with the small stem in place of the paper's NIN.
    c.data.name, c.data.eval_split = "cifar10", "test"
    c.model.encoder, c.model.width = "resnet18", 64
    c.augment = light_augmentation(crop_scale=(0.6, 1.0))
    c.train.batch_size = 128
    c.train.steps = 100 * 50_000 // 128
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.optim.lr = 0.1
  elif variant == "imagenet":
    # The paper's ImageNet optimiser (SGD, batch 192, lr 0.01, momentum 0.9, wd 5e-4, about 35
    # epochs) on a ResNet-50 in place of the paper's AlexNet.
    c.data.name, c.data.eval_split, c.data.image_size = "imagenet2012", "validation", 256
    c.model.encoder, c.model.width, c.model.stem, c.model.dtype = "resnet50", 64, "imagenet", "bfloat16"
    c.augment = light_augmentation(crop_scale=(0.08, 1.0))
    c.augment.crop_size = 224  # square crops: a quarter turn must not change the shape
    c.train.batch_size = 192
    c.train.steps = 35 * 1_281_167 // 192
    c.train.checkpoint_every = 1000
    c.train.log_every = 100
    c.optim.lr = 0.01
  elif variant == "smoke":
    c.model.encoder, c.model.width = "resnet_tiny", 4
    c.train.batch_size = 16
    c.train.steps = 4
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.eval.probe_steps = 20
    c.optim.lr = 0.1
  c.lock()
  return c
