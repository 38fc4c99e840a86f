"""Zero-shot image classification with a trained CLIP run, from class names alone.

  from ssljax.commands.zero_shot import classify
  probs = classify("runs/clip", ["cat.png"], ["red circle", "blue square"], template="a {}")

As in Radford et al. 2021 (arXiv 2103.00020, Section 3.1.2): every label is put into a prompt
template, the text tower embeds the prompts, and each image gets the softmax over its scaled
cosine similarities to them. Several templates (`templates=`) form a prompt ensemble (Section
3.1.4): each label's classifier weight is the normalised mean of its prompts' normalised
embeddings. The run's config, tokenizer and latest checkpoint are all it needs.

Command line (`main`):

  python -m ssljax.commands.zero_shot --workdir runs/clip --image a.png --labels "red circle,blue square"
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Sequence

import jax
import numpy as np

from ssljax import data, objectives
from ssljax import workdir as workdir_lib
from ssljax.errors import UserError
from ssljax.evaluate import zero_shot as zero_shot_lib
from ssljax.families import image_text
from ssljax.text import tokenizer as tokenizer_lib

DEFAULT_TEMPLATE = "a photo of a {}."


def load_image(image, size: int | None) -> np.ndarray:
  """A file path, PIL image or array -> (size, size, 3) uint8 (RGB, shorter side resized to
  `size` and centre-cropped, as the run's data pipeline does)."""
  if isinstance(image, (str, os.PathLike)):
    image = data.decode_image(os.fspath(image), channels=3)  # as an image_folder run reads it
  elif not isinstance(image, np.ndarray):  # a PIL image
    image = np.asarray(image.convert("RGB"))
  image = np.asarray(image)
  if image.dtype != np.uint8:  # floats in [0, 1]
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)  # the tower saw RGB
  return data.prepare_image(image, size)


class ZeroShotClassifier:
  """A trained CLIP run, restored once, that classifies images among any labels."""

  def __init__(self, workdir: str):
    self.config = workdir_lib.load_config(workdir)
    objective, self.params, self.model_state = objectives.restore_model(workdir, self.config)
    if "embed_text" not in objective.extras:
      raise UserError(f"the run in {workdir} is a {objective.name} run, not an image-text (CLIP) run")
    self.tokenizer = tokenizer_lib.load(workdir)
    self.scale = float(objective.extras["logit_scale"](self.params))
    self._embed_image = jax.jit(functools.partial(objective.extras["embed_image"], self.params, self.model_state))
    self._embed_text = jax.jit(functools.partial(objective.extras["embed_text"], self.params, self.model_state))

  def label_weights(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """(K, E): each label's prompt-ensemble classifier weight (one template: its embedding)."""
    seq_len = self.config.text.seq_len
    embed = lambda prompts: np.asarray(self._embed_text(image_text.tokenize(self.tokenizer, prompts, seq_len)))
    per_prompt = zero_shot_lib.class_text_embeddings(embed, labels, templates)  # (K, M, E)
    return zero_shot_lib.ensemble_classifier(per_prompt)

  def image_embeddings(self, images) -> np.ndarray:
    """(N, E) normalised embeddings of images (paths, PIL images or arrays)."""
    batch = np.stack([load_image(image, self.config.data.image_size) for image in images])
    return np.asarray(self._embed_image(batch))

  def classify(self, images, labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
               templates: Sequence[str] | None = None) -> np.ndarray:
    """(N images, K labels) probabilities: softmax over labels of scale x cosine."""
    if not labels:
      raise UserError("give at least one label")
    weights = self.label_weights(list(labels), list(templates) if templates else [template])
    logits = self.scale * self.image_embeddings(images) @ weights.T  # (N, E) . (E, K) -> (N, K)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def classify(workdir: str, images, labels: Sequence[str], template: str = DEFAULT_TEMPLATE, *,
             templates: Sequence[str] | None = None) -> np.ndarray:
  """Zero-shot probabilities (N images, K labels) of a trained CLIP run (module docstring).

  Args:
    workdir: the run's directory (config.json, tokenizer, checkpoints).
    images: image files, PIL images or uint8 (H, W, C) arrays (or one (N, H, W, C) array);
      resized and centre-cropped to the run's image size.
    labels: class names, each put into the template ("a photo of a {}.").
    template: the prompt, with "{}" where the label goes.
    templates: several prompts instead, averaged into a prompt ensemble.
  """
  return ZeroShotClassifier(workdir).classify(images, labels, template, templates)


def format_predictions(names: Sequence[str], labels: Sequence[str], probs: np.ndarray, top_k: int) -> str:
  """One block per image: its `top_k` labels by probability."""
  lines = []
  for name, row in zip(names, probs):
    lines.append(str(name))
    for k in np.argsort(-row, kind="stable")[:top_k]:
      lines.append(f"  {row[k]:7.2%}  {labels[k]}")
  return "\n".join(lines)


def zero_shot_command(workdir: str, image_paths: Sequence[str], labels: str | Sequence[str],
                      template: str = DEFAULT_TEMPLATE, top_k: int = 5) -> str:
  """What `ssljax zero-shot` prints: each image's most probable labels. `labels` is a list or
  one comma-separated string ("red circle,blue square")."""
  if isinstance(labels, str):
    labels = [label.strip() for label in labels.split(",") if label.strip()]
  probs = classify(workdir, list(image_paths), labels, template)
  return format_predictions(image_paths, labels, probs, top_k)


def main(argv: Sequence[str] | None = None) -> None:
  """`ssljax zero-shot --workdir DIR --image FILE [--image FILE] --labels "a,b,c" [--template T]`."""
  parser = argparse.ArgumentParser(prog="ssljax zero-shot", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the CLIP run's directory")
  parser.add_argument("--image", action="append", required=True, help="an image file; repeatable")
  parser.add_argument("--labels", required=True, help='comma-separated class names, e.g. "red circle,blue square"')
  parser.add_argument("--template", default=DEFAULT_TEMPLATE, help='the prompt, "{}" for the label')
  parser.add_argument("--top_k", type=int, default=5, help="labels printed per image")
  args = parser.parse_args(argv)
  print(zero_shot_command(args.workdir, args.image, args.labels, args.template, args.top_k))


if __name__ == "__main__":
  main()
