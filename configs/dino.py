"""DINO (arXiv 2104.14294). Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/dino.py:mnist5k --workdir runs/dino
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import (apply_image_variant, check_variant, image_config, multi_crop_part,
                                   steps_per_epoch)

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("dino", variant, VARIANTS)
  c = image_config()
  c.objective = "dino"
  # The DINO head (section 3.1, appendix): 3 layers, hidden 2048, GELU, bottleneck 256, then the
  # weight-normalised last layer of K = 65536 outputs with its norm fixed to 1.
  c.model.head_depth = 3
  c.model.head_hidden = 2048
  c.model.head_bottleneck = 256
  c.model.num_outputs = 65536
  c.model.norm_last_layer = True
  c.model.head_bn = False  # BatchNorm after the head's hidden layers (the authors' use_bn_in_head)
  c.loss = ml_collections.ConfigDict()
  c.loss.student_temperature = 0.1
  c.loss.teacher_temperature = 0.07  # reached after the warm-up from teacher_temperature_start
  c.loss.teacher_temperature_start = 0.04
  c.loss.teacher_warmup_steps = 0  # the paper's 30 epochs; set by each variant
  c.loss.center_momentum = 0.9
  c.loss.teacher_momentum = 0.996  # at step 0, cosine-increased to 1 at the last step
  c.loss.freeze_last_layer_steps = 0  # the paper's first epoch; set by each variant
  # The two global crops (the authors' code, `DataAugmentationDINO`): BYOL's colour jitter,
  # grayscale and flip; blur p 1.0 on the first, blur p 0.1 and solarisation p 0.2 on the second;
  # area 0.4-1. The local crops: the same colours, blur p 0.5, area 0.05-0.4, 96 px.
  c.augment = ml_collections.ConfigDict()
  c.augment.view1 = augment.default_config("byol_view1")
  c.augment.view2 = augment.default_config("byol_view2")
  for view in (c.augment.view1, c.augment.view2):
    view.crop_scale = (0.4, 1.0)
  local = augment.default_config("byol_view1")
  local.blur_p = 0.5
  multi_crop_part(c, variant, local, crop_scale=(0.05, 0.4), num_local=10)
  # AdamW, lr 0.0005 x batch / 256, weight decay 0.04 (biases and norms excluded). The paper's
  # weight decay rises from 0.04 to 0.4 along a cosine; the optimizer here has a constant weight
  # decay, so it stays at 0.04.
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "adamw", 0.0005, "linear", 0.04
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # BYOL's mnist5k sizes (batch 128, 800 steps, ResNet-18 of width 16), no flip (digits are not
    # mirror-symmetric), two local crops of 16 px, a head and K sized for 10 classes, the last
    # layer frozen for the first epoch. Chosen on validation (docs/image.md): global crops of area
    # 0.7-1 without colour changes, blur or solarisation, BatchNorm in the head (the authors'
    # use_bn_in_head), a teacher temperature of 0.02 throughout and EMA momentum 0.996. With the
    # paper's crops and temperatures the two crops' outputs agree at chance under the random
    # initial encoder, and the teacher's output goes uniform within 200 steps.
    c.model.head_hidden, c.model.head_bottleneck, c.model.num_outputs = 256, 64, 1024
    c.model.head_bn = True
    c.train.batch_size = 128
    c.train.steps = 800
    c.evals.knn.every = 400
    c.loss.teacher_momentum = 0.996
    c.loss.teacher_temperature_start = c.loss.teacher_temperature = 0.02
    c.loss.freeze_last_layer_steps = steps_per_epoch(c)
    c.optim.lr, c.optim.warmup_steps = 0.002, 40
    c.multi_crop.num_local = 2
    for view in (c.augment.view1, c.augment.view2, c.multi_crop.local):
      view.flip_p = 0.0
    for view in (c.augment.view1, c.augment.view2):
      view.crop_scale = (0.7, 1.0)
      view.jitter_p = view.blur_p = view.grayscale_p = view.solarize_p = 0.0
  elif variant == "cifar10":
    # The paper pretrains on ImageNet only; not tuned: the ImageNet recipe on ResNet-18 with the
    # small stem (as the other objectives' cifar10 variants), batch 256, 1000 epochs with 10
    # warm-up epochs, global crops at the 32 px input size and six 16 px local crops, no blur on
    # 32 px images, the teacher's warm-up over 30% of training, the last layer frozen for one epoch.
    c.model.num_outputs = 4096
    c.train.batch_size = 256
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    c.loss.teacher_warmup_steps = 300 * steps_per_epoch(c)
    c.loss.freeze_last_layer_steps = steps_per_epoch(c)
    c.multi_crop.num_local = 6
    for view in (c.augment.view1, c.augment.view2, c.multi_crop.local):
      view.blur_p = 0.0
  elif variant == "imagenet":
    # ViT-S/16, 100 epochs at batch 1024 (the paper's ViT-S/16 100-epoch run, table 9 / the
    # authors' README): 2 x 224 + 10 x 96 crops, lr 0.0005 x 1024 / 256 with 10 warm-up epochs
    # then cosine decay, gradients clipped at norm 3, teacher temperature 0.04 -> 0.07 over 30
    # epochs, the last layer frozen for the first epoch. The authors' stochastic depth (0.1) is
    # not part of this ViT.
    c.model.encoder = "vit_s16"
    c.train.batch_size = 1024
    c.train.steps = 100 * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    c.optim.clip_norm = 3.0
    c.loss.teacher_warmup_steps = 30 * steps_per_epoch(c)
    c.loss.freeze_last_layer_steps = steps_per_epoch(c)
    c.augment.view1.crop_size = c.augment.view2.crop_size = 224
  elif variant == "smoke":
    c.model.head_hidden, c.model.head_bottleneck, c.model.num_outputs = 16, 8, 32
    c.multi_crop.num_local = 2
    c.loss.teacher_warmup_steps, c.loss.freeze_last_layer_steps = 2, 1
  c.lock()
  return c
