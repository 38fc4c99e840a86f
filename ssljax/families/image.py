"""The image family: SimCLR, BYOL, VICReg, rotation, patch placement and the supervised baseline.

- Input: records become {"image": uint8 (H, W, C), "label": int32} on the host (resized when
  the dataset's images vary in size); augmentation happens on the device, inside the step.
What a run reports is the image evaluators' (`ssljax.evaluators`: linear_probe,
few_label_probe, knn), which `config.evals` names.
"""

from __future__ import annotations

import functools

import ml_collections

from ssljax import data
from ssljax.interface import Family, TrainInput


def record_fn(config: ml_collections.ConfigDict):
  return functools.partial(data.image_example, image_size=config.data.image_size)


def require_labels(config: ml_collections.ConfigDict, info: data.DatasetInfo, needed_by: str) -> int:
  """The number of classes, or a NoLabelsError saying what needs them (an image folder without
  class folders has none)."""
  if info.num_classes is None:
    raise data.NoLabelsError(
        f"{needed_by} needs labelled images, but {config.data.name} at {config.data.get('path')!r} has none "
        "(no class folders). Put the images in class folders (PATH/<class>/...), or train without "
        "evaluation: --config.train.evaluate=False, and every=0 for the evaluators of config.evals "
        "(--config.evals.knn.every=0)")
  return info.num_classes


def evaluations(config: ml_collections.ConfigDict) -> list[str]:
  """What reads labels when the run trains: the end-of-training evaluation and the evaluators
  that run during training, as config keys."""
  evals = config.get("evals", {})
  needed = ["config.train.evaluate"] if config.train.evaluate and len(evals) else []
  return needed + [f"config.evals.{name}.every" for name, options in evals.items() if options.get("every")]


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  del workdir  # images need nothing besides the dataset
  d = config.data
  source = data.in_memory(data.open_split(d, d.train_split))
  info = data.dataset_info(d)
  # An unlabelled folder trains, but the evaluators would stop at their first call; say so
  # before any step is taken.
  needed = evaluations(config)
  if needed:
    require_labels(config, info, f"the evaluation ({', '.join(needed)})")
  return TrainInput(source=source, record_fn=record_fn(config), unit="images")


FAMILY = Family(name="image", train_input=train_input)
