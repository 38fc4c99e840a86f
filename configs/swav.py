"""SwAV (arXiv 2006.09882). Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/swav.py:mnist5k --workdir runs/swav
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import (apply_image_variant, check_variant, image_config, multi_crop_part,
                                   steps_per_epoch)

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("swav", variant, VARIANTS)
  c = image_config()
  c.objective = "swav"
  # The projection head (section 4.1, the authors' code): 2048 hidden with BN + ReLU, 128 out,
  # then K = 3000 prototypes.
  c.model.projector_depth = 2
  c.model.projector_width = 2048
  c.model.projector_dim = 128
  c.model.num_prototypes = 3000
  c.loss = ml_collections.ConfigDict()
  c.loss.temperature = 0.1  # tau of the predictions' softmax
  c.loss.epsilon = 0.05  # the Sinkhorn-Knopp regularisation
  c.loss.sinkhorn_iterations = 3
  c.loss.freeze_prototypes_steps = 0  # the paper's first epoch; set by each variant
  # SimCLR's augmentations for every crop (colour strength 1, blur p 0.5), the global crops of
  # area 0.14-1 and the local crops of area 0.05-0.14 (the authors' main runs).
  c.augment = augment.default_config()
  c.augment.crop_scale = (0.14, 1.0)
  multi_crop_part(c, variant, augment.default_config(), crop_scale=(0.05, 0.14), num_local=6)
  # LARS, lr 0.3 x batch / 256 (4.8 at batch 4096), weight decay 1e-6; biases and BN excluded.
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "lars", 0.3, "linear", 1e-6
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # BYOL's mnist5k sizes and LARS learning rate (batch 128, 800 steps, ResNet-18 of width 16),
    # no flip (digits are not mirror-symmetric), two 16 px local crops, 30 prototypes (the
    # Sinkhorn codes spread each batch of 128 over them: a few per digit), the prototypes frozen
    # for the first epoch. Chosen on validation (docs/image.md): global crops of area 0.7-1
    # without colour changes or blur. With the paper's global crops (area 0.3-1 here, SimCLR's
    # colours), the two crops' codes agree at chance under the random initial encoder and the
    # loss settles at log K (uniform predictions) within 50 steps, at any learning rate tried.
    c.model.projector_width, c.model.projector_dim, c.model.num_prototypes = 256, 64, 30
    c.train.batch_size = 128
    c.train.steps = 800
    c.evals.knn.every = 400
    c.optim.lr, c.optim.warmup_steps = 4.0, 40
    c.loss.freeze_prototypes_steps = steps_per_epoch(c)
    c.multi_crop.num_local = 2
    c.augment.crop_scale, c.multi_crop.local.crop_scale = (0.7, 1.0), (0.1, 0.3)
    c.augment.jitter_p = c.augment.blur_p = c.augment.grayscale_p = 0.0
    for view in (c.augment, c.multi_crop.local):
      view.flip_p = 0.0
  elif variant == "cifar10":
    # The paper pretrains on ImageNet only; not tuned: the ImageNet recipe on ResNet-18 with the
    # small stem (as the other objectives' cifar10 variants), batch 256, 1000 epochs with 10
    # warm-up epochs, global crops at the 32 px input size and six 16 px local crops, no blur on
    # 32 px images, 100 prototypes (a few per class), frozen for the first epoch.
    c.model.num_prototypes = 100
    c.train.batch_size = 256
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    c.loss.freeze_prototypes_steps = steps_per_epoch(c)
    c.augment.blur_p = c.multi_crop.local.blur_p = 0.0
  elif variant == "imagenet":
    # ResNet-50, 2 x 224 + 6 x 96 crops, batch 4096, LARS 4.8 with 10 warm-up epochs then cosine
    # decay, 800 epochs, eps 0.05, 3000 prototypes frozen for the first epoch (313 iterations in the
    # authors' script). Their final learning rate 0.0048 is 0 here, and their queue is left out.
    c.train.batch_size = 4096
    c.train.steps = 800 * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    c.loss.freeze_prototypes_steps = steps_per_epoch(c)
    c.augment.crop_size = 224
  elif variant == "smoke":
    c.model.projector_width, c.model.projector_dim, c.model.num_prototypes = 16, 8, 12
    c.multi_crop.num_local = 2
    c.loss.freeze_prototypes_steps = 1
  c.lock()
  return c
