"""Fine-tuning the encoder of a pretrained image run (MAE, SimCLR, BYOL, ...) with a new linear
head, end to end, on the labelled training images of the run's own dataset (ssljax/finetune/images.py).

  ssljax finetune --workdir runs/mae                                  # all labels
  ssljax finetune --workdir runs/mae --config.labels_per_class=10     # 10 a class, `draws` draws
  ssljax finetune --workdir runs/mae --config.init=scratch            # the same encoder, random

`ssljax finetune` reads this config when --workdir is an image run (no --task). Each label draw
and learning rate is one run of the supervised objective started from the pretrained run
(`config.init_from`), chosen on the validation split; the test split is scored once. The label
draws are the few_label_probe's (seed: the pretrained run's eval.seed + draw).

Recipe: AdamW (betas 0.9, 0.999, weight decay 0.05 on the matrices: MAE's fine-tuning, arXiv
2111.06377 Appendix A.1, Table 9, without its layer-wise decay, mixup, cutmix or drop path), a
linear warm-up over the first 10% of the steps then a cosine decay, random resized crops of area
`crop_scale` and the pretrained run's crop size and flip. Not tuned beyond the learning rate.
"""

import ml_collections
from ml_collections import config_dict

VARIANTS = ("default",)


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  if variant not in ("", *VARIANTS):
    raise ValueError(f"unknown image fine-tuning variant {variant!r}; choose one of {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.init = "pretrained"  # or "scratch": the same encoder, randomly initialised
  c.seed = 0
  # Label budget: all labels (0), or k per class, averaged over `draws` draws.
  c.labels_per_class = 0
  c.draws = 5
  # Candidates, chosen on the validation split (mean over the draws): a decade apart.
  c.lrs = (1e-4, 1e-3)
  c.batch_size = 128
  c.few_label_batch_size = 32  # > 0: the batch under a label budget (10 digits a class are 100 images)
  c.epochs = 5.0
  c.min_steps = 50  # few labels: an epoch is a handful of steps
  c.max_steps = 0  # > 0: cap on the steps of one run
  c.weight_decay = 0.05
  c.warmup_fraction = 0.1
  c.schedule = "cosine"
  c.clip_norm = 0.0
  c.crop_scale = (0.5, 1.0)
  c.flip_p = config_dict.placeholder(float)  # None: the pretrained run's (digits: 0, photographs: 0.5)
  c.eval_batch_size = 500
  c.output_dir = config_dict.placeholder(str)  # None: <pretrained workdir>/finetune/<run name>
  c.data_dir = config_dict.placeholder(str)  # None: the pretrained run's
  c.lock()
  return c
