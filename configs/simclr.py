"""SimCLR (arXiv 2002.05709). Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/simclr.py:mnist5k --workdir runs/simclr
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import (apply_image_variant, check_variant, image_config, multi_crop_part,
                                   steps_per_epoch)

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("simclr", variant, VARIANTS)
  c = image_config()
  c.objective = "simclr"
  c.model.projector_depth = 2
  c.model.projector_width = 2048
  c.model.projector_dim = 128
  c.model.projector_bn = True
  c.loss = ml_collections.ConfigDict()
  c.loss.temperature = 0.1
  c.loss.block_size = 0  # 0: dense NT-Xent; > 0: blockwise, for batches beyond memory
  c.augment = augment.default_config()
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # Sized so that installing, pretraining and evaluating fit 10 minutes on 2 CPU cores. No flip
    # (digits are not mirror-symmetric), temperature 0.2 and 2,000 steps (where SimCLR passes raw
    # pixels on kNN too) were chosen on the validation split (docs/image.md).
    c.model.projector_width, c.model.projector_dim = 256, 64
    c.train.batch_size = 128
    c.train.steps = 2000
    c.train.checkpoint_every = 250
    c.evals.knn.every = 500
    c.optim.name, c.optim.lr, c.optim.warmup_steps = "lars", 4.0, 60
    c.loss.temperature = 0.2
    c.augment.crop_scale = (0.3, 1.0)
    c.augment.flip_p = 0.0
    c.augment.jitter_strength = 0.5
    c.augment.blur_p = 0.5
  elif variant == "cifar10":
    # The paper's CIFAR-10 setup (appendix B.9): ResNet-18 with a 3x3 stem and no max-pool,
    # colour strength 0.5, no blur, LARS lr 1.0 x batch/256, temperature 0.5, 1000 epochs.
    c.model.projector_width = 512
    c.train.batch_size = 512
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 1.0, 1e-6, 10 * steps_per_epoch(c)
    c.loss.temperature = 0.5
    c.augment.jitter_strength = 0.5
    c.augment.blur_p = 0.0
  elif variant == "imagenet":
    # The paper's ImageNet recipe: ResNet-50, batch 4096, LARS lr 0.3 x batch/256 = 4.8,
    # weight decay 1e-6, temperature 0.1, 100 epochs with 10 epochs of warmup, blur p 0.5.
    c.train.batch_size = 4096
    c.train.steps = 100 * steps_per_epoch(c)
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.3, 1e-6, 10 * steps_per_epoch(c)
    c.loss.temperature = 0.1
    c.augment.crop_size = 224
    c.augment.jitter_strength = 1.0
    c.augment.blur_p = 0.5
  elif variant == "smoke":
    c.model.projector_width, c.model.projector_dim = 16, 8
  # Multi-crop, off: --config.multi_crop.num_local=N adds N local crops, augmented as the two
  # views but smaller (ssljax/objectives/simclr.py says how they enter the loss).
  multi_crop_part(c, variant, ml_collections.ConfigDict(c.augment.to_dict()), crop_scale=(0.05, 0.4))
  c.lock()
  return c
