"""The fully supervised baseline: the encoder plus a linear classifier trained on all labels.
Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/supervised.py:mnist5k --workdir runs/supervised
"""

import ml_collections

from ssljax.augment import crop_and_flip
from ssljax.train.defaults import apply_image_variant, check_variant, image_config, steps_per_epoch

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("supervised", variant, VARIANTS)
  c = image_config()
  c.objective = "supervised"
  c.model.num_classes = 10
  c.augment = crop_and_flip()
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "sgd", 0.1, "linear", 1e-4
  # Label budget: 0 trains on every label; k > 0 on k labels of every class, the training
  # split's draw `draw` of the few_label_probe (seed eval.seed + draw): `ssljax finetune` of an
  # image run trains one run per draw (objectives/supervised.py).
  c.labels_per_class = 0
  c.draw = 0
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # Digits are not mirror-symmetric, so crops only.
    c.augment = crop_and_flip(crop_scale=(0.5, 1.0), flip_p=0.0)
    c.train.batch_size = 256
    c.train.steps = 300
    c.evals.knn.every = 150
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.1, 5e-4, 30
  elif variant == "cifar10":
    # The usual CIFAR-10 ResNet-18 recipe: SGD batch 128, lr 0.1, momentum 0.9, wd 5e-4,
    # 200 epochs of cosine decay, crop (padding-free random resized crop here) and flip.
    c.augment = crop_and_flip(crop_scale=(0.5, 1.0))
    c.train.batch_size = 128
    c.train.steps = 200 * steps_per_epoch(c)
    c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = 0.1, "none", 5e-4
  elif variant == "imagenet":
    # Goyal et al. 2017 (arXiv 1706.02677): ResNet-50, SGD, lr 0.1 x batch / 256, wd 1e-4,
    # 5 warmup epochs, 90 epochs (cosine decay here in place of the step schedule).
    c.model.num_classes = 1000
    c.augment = crop_and_flip()
    c.augment.crop_size = 224
    c.train.batch_size = 1024
    c.train.steps = 90 * steps_per_epoch(c)
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.1, 1e-4, 5 * steps_per_epoch(c)
  c.lock()
  return c
