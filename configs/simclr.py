"""SimCLR (arXiv 2002.05709). Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/simclr.py:mnist5k --workdir runs/simclr
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import base_config

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = variant or "mnist5k"
  if variant not in VARIANTS:
    raise ValueError(f"unknown simclr variant {variant!r}; choose one of {VARIANTS}")
  c = base_config()
  c.objective = "simclr"
  c.model.projector_depth = 2
  c.model.projector_width = 2048
  c.model.projector_dim = 128
  c.model.projector_bn = True
  c.loss = ml_collections.ConfigDict()
  c.loss.temperature = 0.1
  c.loss.block_size = 0  # 0: dense NT-Xent; > 0: blockwise, for batches beyond memory
  c.augment = augment.default_config()

  if variant == "mnist5k":
    # Sized so that pretraining plus evaluation fits 10 minutes on 2 CPU cores: a ResNet-18 of
    # width 16 whose stem has stride 2 (stages at 14, 7, 4, 2 px; 28 px digits need no more),
    # and a LARS learning rate of 2.0, which beat 1.0 and 4.0 in 80-step trials.
    c.model.encoder, c.model.width, c.model.stem_stride = "resnet18", 16, 2
    c.model.projector_width, c.model.projector_dim = 256, 64
    c.train.batch_size = 256
    c.train.steps = 400
    c.train.checkpoint_every = 100
    c.train.knn_every = 200
    c.optim.name, c.optim.lr, c.optim.warmup_steps = "lars", 2.0, 40
    c.loss.temperature = 0.2  # beat 0.1 and 0.5 in 80-step trials
    c.augment.crop_scale = (0.3, 1.0)
    c.augment.jitter_strength = 0.5
    c.augment.blur_p = 0.5
  elif variant == "cifar10":
    # The paper's CIFAR-10 setup (appendix B.9): ResNet-18 with a 3x3 stem and no max-pool,
    # colour strength 0.5, no blur, LARS lr 1.0 x batch/256, temperature 0.5, 1000 epochs.
    c.data.name, c.data.eval_split = "cifar10", "test"
    c.model.encoder, c.model.width = "resnet18", 64
    c.model.projector_width = 512
    c.train.batch_size = 512
    c.train.steps = 1000 * 50_000 // 512
    c.train.checkpoint_every = 1000
    c.train.log_every = 50
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 1.0, 1e-6, 10 * 50_000 // 512
    c.loss.temperature = 0.5
    c.augment.jitter_strength = 0.5
    c.augment.blur_p = 0.0
  elif variant == "imagenet":
    # The paper's ImageNet recipe: ResNet-50, batch 4096, LARS lr 0.3 x batch/256 = 4.8,
    # weight decay 1e-6, temperature 0.1, 100 epochs with 10 epochs of warmup, blur p 0.5.
    c.data.name, c.data.eval_split, c.data.image_size = "imagenet2012", "validation", 256
    c.model.encoder, c.model.width, c.model.stem, c.model.dtype = "resnet50", 64, "imagenet", "bfloat16"
    c.train.batch_size = 4096
    steps_per_epoch = 1_281_167 // 4096
    c.train.steps = 100 * steps_per_epoch
    c.train.checkpoint_every = 1000
    c.train.log_every = 100
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.3, 1e-6, 10 * steps_per_epoch
    c.loss.temperature = 0.1
    c.augment.crop_size = 224
    c.augment.jitter_strength = 1.0
    c.augment.blur_p = 0.5
  elif variant == "smoke":
    c.model.encoder, c.model.width = "resnet_tiny", 4
    c.model.projector_width, c.model.projector_dim = 16, 8
    c.train.batch_size = 16
    c.train.steps = 4
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.eval.probe_steps = 20
    c.optim.lr = 0.1
  c.lock()
  return c
