"""Fine-tuning the encoder of a pretrained image run end to end with a linear head (MAE's
end-to-end fine-tuning, He et al. 2021, arXiv 2111.06377, Section 4 and Appendix A.1; the
encoder of any image objective), under the selection protocol of `ssljax.finetune.protocol`.

  results = ssljax.finetune.run("runs/mae", config_overrides={"labels_per_class": 10})

Each trial (a label draw and a learning rate) is a run of the trainer with the "supervised"
objective (configs/supervised.py) built by `trial_config`: the pretrained run's dataset, splits
and encoder keys, a linear head of the dataset's classes, `config.init_from` = the pretrained run
(its encoder copied in by the objective's `load_pretrained`; with `init="scratch"` nothing is
copied), and the label budget's draw (`labels_per_class`, `draw`: the few_label_probe's draws,
seeded by the pretrained run's `eval.seed`). A trial is scored by the top-1 accuracy of its
classifier on the validation and test splits (`accuracy`); the learning rate with the best mean
validation accuracy over the draws is chosen, and only its test accuracy (mean and std over the
draws) is reported, as the text path does (`protocol.run_trial` trains, resumes or reads back
each trial the same way).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from ssljax import augment, data
from ssljax import workdir as workdir_lib
from ssljax.downstream import examples
from ssljax.errors import UserError
from ssljax.families import image
from ssljax.finetune import protocol
from ssljax.train import checks
from ssljax.train.defaults import load_config

INITS = ("pretrained", "scratch")
METRIC = "accuracy"
# What a trial takes from the pretrained run's config: where the images are, and the encoder's
# shape and numerics (ResNet or ViT keys of configs/<objective>.py's image part).
DATA_KEYS = ("name", "train_split", "eval_split", "test_split", "data_dir", "path", "image_size", "channels")
ENCODER_KEYS = ("encoder", "width", "stem", "stem_stride", "zero_init_residual", "bn_momentum", "padding",
                "pixel_mean", "pixel_std", "attention_impl", "remat", "dtype")


def default_config() -> ml_collections.ConfigDict:
  """configs/finetune_images.py's config (what `ssljax finetune` of an image run starts from)."""
  return load_config("finetune_images")


def run_name(config: ml_collections.ConfigDict) -> str:
  """classify[-scratch][-<k>_per_class]: runs of one pretrained model that differ in these do not
  overwrite each other."""
  name = "classify" + ("-scratch" if config.init == "scratch" else "")
  return f"{name}-{config.labels_per_class}_per_class" if config.labels_per_class else name


def pretrained_view(source: ml_collections.ConfigDict) -> tuple[int | None, float]:
  """(crop size, flip probability) of the pretrained run's augmentation (its first view's, for
  objectives with several); (None, 0.5) where it has none."""
  view = source.get("augment") or {}
  view = view.get("view1", view)
  return view.get("crop_size"), float(view.get("flip_p", 0.5))


def num_classes(source: ml_collections.ConfigDict) -> int:
  return image.require_labels(source, data.dataset_info(source.data), "image fine-tuning")


def trial_config(config: ml_collections.ConfigDict, source: ml_collections.ConfigDict, pretrained_workdir: str, *,
                 draw: int, lr: float, labelled: int) -> ml_collections.ConfigDict:
  """The supervised objective's config of one trial (see the module docstring)."""
  child = load_config("supervised")
  for part, keys in (("data", DATA_KEYS), ("model", ENCODER_KEYS)):
    for key in keys:
      if key in source[part]:
        child[part][key] = _as_config_value(source[part][key])
  if config.data_dir:
    child.data.data_dir = config.data_dir
  child.model.num_classes = num_classes(source)
  crop_size, flip_p = pretrained_view(source)
  child.augment = augment.crop_and_flip(crop_scale=tuple(config.crop_scale),
                                        flip_p=flip_p if config.flip_p is None else config.flip_p)
  child.augment.crop_size = crop_size
  child.seed = config.seed
  child.init_from = pretrained_workdir if config.init == "pretrained" else None
  child.labels_per_class, child.draw = config.labels_per_class, draw
  # Under a label budget, `few_label_batch_size`; never more than the labelled images.
  budget_batch = config.few_label_batch_size or config.batch_size
  batch = min(budget_batch if config.labels_per_class else config.batch_size, labelled)
  child.train.batch_size = batch
  child.train.steps = protocol.steps_for(_with_batch(config, batch), labelled)
  child.train.log_every, child.train.checkpoint_every, child.train.keep_checkpoints = 1, child.train.steps, 1
  child.train.evaluate = False
  o = child.optim
  o.name, o.lr, o.lr_scaling, o.b1, o.b2, o.eps = "adamw", lr, "none", 0.9, 0.999, 1e-8
  o.weight_decay, o.warmup_steps, o.warmup_fraction = config.weight_decay, 0, config.warmup_fraction
  o.schedule, o.clip_norm = config.schedule, config.clip_norm
  child.eval.seed = source.eval.seed  # the probes' draws
  child.eval.batch_size = config.eval_batch_size
  child.evals = ml_collections.ConfigDict()  # scored by `accuracy`, not by the probes
  return child


def _as_config_value(value):
  """A value read back from config.json as the configs write it: its lists (pixel_mean) as tuples."""
  return tuple(value) if isinstance(value, list) else value


def _with_batch(config: ml_collections.ConfigDict, batch: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**config.to_dict(), "batch_size": batch})


def accuracy(directory: str, split: str) -> dict:
  """{"accuracy": top-1 accuracy} of a finished trial's classifier on `split` of its dataset
  (the config's validation or test split), streamed in batches."""
  from ssljax import objectives

  objective, params, model_state = objectives.restore_model(directory)
  config = workdir_lib.load_config(directory)
  name = {"validation": config.data.eval_split, "test": config.data.test_split}[split]
  predict = jax.jit(objective.extras["predict"])
  correct = total = 0
  for batch in data.eval_batches(data.open_split(config.data, name), config.eval.batch_size, image.record_fn(config)):
    logits = predict(params, model_state, {"image": batch["image"]})  # (b, K)
    hits = np.asarray(np.argmax(logits, axis=-1) == batch["label"])
    correct += int(np.sum(hits & batch["mask"]))
    total += int(np.sum(batch["mask"]))
  return {METRIC: correct / total}


def draws_of(config: ml_collections.ConfigDict) -> int:
  return config.draws if config.labels_per_class else 1


def training_examples(source: ml_collections.ConfigDict) -> int:
  return len(data.open_split(source.data, source.data.train_split))


def finetune(pretrained_workdir: str, config: ml_collections.ConfigDict, out_dir: str, *,
             progress: bool = True) -> dict:
  """Runs the protocol on the image run of `pretrained_workdir`, its trials under `out_dir`, and
  returns the results (the fields of the text path's, for `ssljax.finetune.format_results`)."""
  if config.init not in INITS:
    raise checks.ConfigError(f"config.init must be one of {INITS}, got {config.init!r}")
  if not config.lrs:
    raise checks.ConfigError("config.lrs needs at least one learning rate")
  if config.labels_per_class < 0 or config.draws < 1:
    raise checks.ConfigError(f"config.labels_per_class must be >= 0 and config.draws >= 1, got "
                             f"{config.labels_per_class} and {config.draws}")
  started = time.perf_counter()
  pretrained_workdir = os.path.abspath(pretrained_workdir)  # the trials' config.json name it
  source = workdir_lib.load_config(pretrained_workdir)
  classes = num_classes(source)
  train_size = training_examples(source)
  labelled = classes * config.labels_per_class if config.labels_per_class else train_size
  trials, test_scores = [], {}
  for draw in range(draws_of(config)):
    for lr in config.lrs:
      child = trial_config(config, source, pretrained_workdir, draw=draw, lr=lr, labelled=labelled)
      record = protocol.run_trial(child, os.path.join(out_dir, "trials", f"draw{draw}-lr{lr:g}"), progress=progress,
                                  score=accuracy)
      test_scores[(draw, lr)] = record["test"]  # reported only for the chosen rate
      trials.append({"draw": draw, "lr": lr, "labelled": labelled, "steps": record["steps"],
                     "final_train_loss": record["final_train_loss"], "validation": record["validation"]})
  chosen = max(config.lrs, key=lambda lr: np.mean([t["validation"][METRIC] for t in trials if t["lr"] == lr]))
  draws = draws_of(config)
  return {
      "task": f"{source.data.name}_classification", "kind": "image_classification",
      "description": f"{classes}-class image classification, the {source.objective} run's encoder + a linear head",
      "init": config.init, "metric": METRIC,
      "labels": f"{config.labels_per_class}_per_class" if config.labels_per_class else "all", "draws": draws,
      "examples": {"train": train_size, "labelled": labelled,
                   **{role: len(data.open_split(source.data, source.data[key]))
                      for role, key in (("validation", "eval_split"), ("test", "test_split"))}},
      "chosen": {"lr": chosen},
      "validation": examples.mean_std([t["validation"] for t in trials if t["lr"] == chosen]),
      "test": examples.mean_std([test_scores[(d, chosen)] for d in range(draws)]),
      "trials": trials,
      "seconds": round(time.perf_counter() - started, 1),
  }


def is_image_run(workdir: str) -> bool:
  """Whether `workdir` holds a run of an image objective (its family is "image"): its objective
  built from its config.json, nothing restored. False where there is no config.json (the text
  path then says what is missing)."""
  from ssljax import objectives

  config = workdir_lib.saved_config(workdir)
  if config is None:
    return False
  return objectives.build(ml_collections.ConfigDict(config)).family.name == image.FAMILY.name


def check_image_config(config: ml_collections.ConfigDict) -> None:
  """An image run's fine-tuning takes configs/finetune_images.py's keys, not a text task's."""
  if "task" in config:
    raise UserError(f"--task / configs/finetune.py are for BERT runs; an image run is fine-tuned on its own "
                    f"dataset's labels with configs/finetune_images.py (drop --task {config.task})")


__all__ = ["accuracy", "default_config", "finetune", "is_image_run", "run_name", "trial_config"]
