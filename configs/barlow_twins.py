"""Barlow Twins (arXiv 2103.03230). Variants: mnist5k (default), cifar10, imagenet, smoke.

  ssljax train --config configs/barlow_twins.py:mnist5k --workdir runs/barlow_twins
"""

import ml_collections

from ssljax import augment
from ssljax.train.defaults import apply_image_variant, check_variant, image_config, steps_per_epoch

VARIANTS = ("mnist5k", "cifar10", "imagenet", "smoke")


def get_config(variant: str = "mnist5k") -> ml_collections.ConfigDict:
  variant = check_variant("barlow_twins", variant, VARIANTS)
  c = image_config()
  c.objective = "barlow_twins"
  # Projector: three linear layers of 8192, the first two followed by BN and ReLU (section 4).
  c.model.projector_depth = 3
  c.model.projector_width = 8192
  c.model.projector_dim = 8192
  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_offdiag = 5e-3  # lambda, the weight of the redundancy-reduction term (eq. 1)
  # BYOL's augmentations (section 4: "the same as BYOL"), asymmetric blur and solarization.
  c.augment = ml_collections.ConfigDict()
  c.augment.view1 = augment.default_config("byol_view1")
  c.augment.view2 = augment.default_config("byol_view2")
  # LARS, base lr 0.2 x batch / 256 for the weights, weight decay 1.5e-6; biases and BN parameters
  # excluded from the weight decay and the trust ratio (ssljax.train.optim.decay_mask), as the
  # paper's. Not expressible here: the paper's separate learning rate of 0.0048 x batch / 256 for
  # the biases and BN parameters (they take the weights' rate), and its cosine decay to 1/1000
  # of the peak (this one decays to 0).
  c.optim.name, c.optim.lr, c.optim.lr_scaling, c.optim.weight_decay = "lars", 0.2, "linear", 1.5e-6
  apply_image_variant(c, variant)

  if variant == "mnist5k":
    # 2 x 128 views per step, VICReg's mnist5k sizes (a 512-wide projector, its learning rate and
    # steps), lambda the paper's. Checked on the validation split at 300 steps (probe all / 10 per
    # class / kNN): 0.908 / 0.730 / 0.780 against random init's 0.482 / 0.303 / 0.474.
    c.model.projector_width, c.model.projector_dim = 512, 512
    c.train.batch_size = 128
    c.train.steps = 400
    c.evals.knn.every = 200
    c.optim.lr, c.optim.warmup_steps = 2.0, 40
    for view in (c.augment.view1, c.augment.view2):
      view.crop_scale = (0.3, 1.0)
      view.flip_p = 0.0  # digits are not mirror-symmetric (SimCLR's trials: flip cost 0.05 of kNN)
  elif variant == "cifar10":
    # The paper pretrains on ImageNet only; this is solo-learn's CIFAR-10 setting (ResNet-18 with
    # the small stem, a 2048-2048-2048 projector, batch 256, 1000 epochs, LARS lr 0.3, wd 1e-4, no
    # blur on 32 px images). Not expressed: its loss scale 0.1 and LARS trust coefficient 0.02 with
    # LARC clipping (ours: 1e-3, no clipping).
    c.model.projector_width, c.model.projector_dim = 2048, 2048
    c.train.batch_size = 256
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps = 0.3, 1e-4, 10 * steps_per_epoch(c)
    c.augment.view1.blur_p = c.augment.view2.blur_p = 0.0
  elif variant == "imagenet":
    # The paper's recipe (section 4): ResNet-50, batch 2048, 1000 epochs, LARS with 10 warmup
    # epochs then cosine decay, lambda 5e-3, the 8192-8192-8192 projector.
    c.train.batch_size = 2048
    c.train.steps = 1000 * steps_per_epoch(c)
    c.optim.warmup_steps = 10 * steps_per_epoch(c)
    c.augment.view1.crop_size = c.augment.view2.crop_size = 224
  elif variant == "smoke":
    c.model.projector_width, c.model.projector_dim = 16, 16
  c.lock()
  return c
