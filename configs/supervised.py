"""The fully supervised baseline: the encoder plus a linear classifier trained on all labels.
Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/supervised.py:mnist5k --workdir runs/supervised
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import base_config

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def crop_and_flip(crop_scale=(0.08, 1.0), flip_p: float = 0.5) -> ml_collections.ConfigDict:
  """Random resized crop and horizontal flip, the standard supervised augmentation."""
  a = augment.default_config("none")
  a.crop_p, a.crop_scale, a.flip_p = 1.0, crop_scale, flip_p
  return a


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = variant or "mnist5k"
  if variant not in VARIANTS:
    raise ValueError(f"unknown supervised variant {variant!r}; choose one of {VARIANTS}")
  c = base_config()
  c.objective = "supervised"
  c.model.num_classes = 10
  c.augment = crop_and_flip()
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "sgd", 0.1, "linear", 1e-4

  if variant == "mnist5k":
    # The encoder of the self-supervised mnist5k configs (ResNet-18 of width 16 with a stride-2
    # stem). Digits are not mirror-symmetric, so crops only.
    c.model.encoder, c.model.width, c.model.stem_stride = "resnet18", 16, 2
    c.augment = crop_and_flip(crop_scale=(0.5, 1.0), flip_p=0.0)
    c.train.batch_size = 256
    c.train.steps = 300
    c.train.checkpoint_every = 100
    c.train.knn_every = 150
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.1, 5e-4, 30
  elif variant == "cifar10":
    # The usual CIFAR-10 ResNet-18 recipe: SGD batch 128, lr 0.1, momentum 0.9, wd 5e-4,
    # 200 epochs of cosine decay, crop (padding-free random resized crop here) and flip.
    c.data.name, c.data.eval_split = "cifar10", "test"
    c.model.encoder, c.model.width = "resnet18", 64
    c.augment = crop_and_flip(crop_scale=(0.5, 1.0))
    c.train.batch_size = 128
    c.train.steps = 200 * 50_000 // 128
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = 0.1, "none", 5e-4
  elif variant == "imagenet":
    # Goyal et al. 2017 (arXiv 1706.02677): ResNet-50, SGD, lr 0.1 x batch / 256, wd 1e-4,
    # 5 warmup epochs, 90 epochs (cosine decay here in place of the step schedule).
    c.data.name, c.data.eval_split, c.data.image_size = "imagenet2012", "validation", 256
    c.model.encoder, c.model.width, c.model.stem, c.model.dtype = "resnet50", 64, "imagenet", "bfloat16"
    c.model.num_classes = 1000
    c.augment = crop_and_flip()
    c.augment.crop_size = 224
    c.train.batch_size = 1024
    steps_per_epoch = 1_281_167 // 1024
    c.train.steps = 90 * steps_per_epoch
    c.train.checkpoint_every = 1000
    c.train.log_every = 100
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.1, 1e-4, 5 * steps_per_epoch
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
