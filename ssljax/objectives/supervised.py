"""The fully supervised baseline: the same encoder and a linear classifier, trained on labels.

  loss = -1/N sum_i log softmax(W f(aug(x_i)) + b)[y_i]

on augmented images (`config.augment`: random resized crop and flip by default). It is the
reference row of the evaluation table, "supervised on all labels", that the self-supervised
encoders are measured against; its `features` are the encoder's, probed like any other.
The global-batch mean comes from `classification_loss(..., axis_name=DATA_AXIS)`.

Fine-tuning a pretrained encoder (`ssljax finetune` of an image run, `ssljax.finetune.images`)
is this objective started from that run: `config.init_from` names it, and `load_pretrained`
copies its `params["encoder"]` (any image objective's f1: a ResNet or a ViT, with the same
`config.model` keys) into the fresh network, the linear head staying random. Only parameters
cross over: a ResNet's BatchNorm running statistics start afresh and follow the fine-tuning
batches (momentum `model.bn_momentum`; train mode normalises with the batch's own statistics).
Under a label budget (`config.labels_per_class` = k > 0) the run trains on k labels of every
class, draw `config.draw`: the subset that the few_label_probe evaluator's draw of that index
fits on (`linear_probe.labels_per_class_subset` of the training split's labels, seed
`eval.seed + draw`), so a fine-tuned encoder and a probed one see the same labelled images.

Extras: "predict", (params, model_state, batch) -> (B, num_classes) logits in inference mode.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from ssljax import augment, losses
from ssljax.downstream.examples import Subset
from ssljax.evaluate.linear_probe import labels_per_class_subset
from ssljax.families import image
from ssljax.interface import DATA_AXIS, Family, LossAux, Objective, TrainInput, register
from ssljax.objectives import common

# The part of the parameters that fine-tuning takes from a pretrained run.
PRETRAINED_PART = "encoder"


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> common.EncoderWithHead:
  m = config.model
  classifier = common.head((m.num_classes,), m, axis_name, use_bn=False)  # one Dense layer
  return common.EncoderWithHead(encoder=common.encoder(m, axis_name), head=classifier)


def labelled_indices(labels: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """Indices of the training examples that a run with `config.labels_per_class` = k > 0 trains
  on: k of every class, draw `config.draw`, exactly the few_label_probe's draw of that index."""
  if config.draw < 0:
    raise ValueError(f"config.draw must be >= 0, got {config.draw}")
  try:
    return labels_per_class_subset(labels, config.labels_per_class, seed=config.eval.seed + config.draw)
  except ValueError as error:
    raise ValueError(f"config.labels_per_class={config.labels_per_class}: in the training split, {error}; "
                     "lower it") from error


def source_labels(source) -> np.ndarray:
  """The labels of a training source, in its order (an in-memory split keeps them as one array)."""
  labels = getattr(source, "labels", None)
  return np.asarray(labels if labels is not None else [source[i]["label"] for i in range(len(source))])


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  """The image family's training input, restricted to the label budget's draw when there is one."""
  inp = image.FAMILY.train_input(config, workdir)
  if not config.labels_per_class:
    return inp
  indices = labelled_indices(source_labels(inp.source), config)
  return dataclasses.replace(inp, source=Subset(inp.source, indices))


FAMILY = Family(name=image.FAMILY.name, train_input=train_input)


def load_pretrained(params, pretrained):
  """`params` with `pretrained["encoder"]` in place of its encoder, leaf by leaf; a pretrained
  run without an encoder of the same names and shapes is a ValueError naming the difference."""
  if PRETRAINED_PART not in pretrained:
    raise ValueError(f"the pretrained run has no params[{PRETRAINED_PART!r}] (it has {sorted(pretrained)}); "
                     "fine-tuning takes the encoder of an image objective's run")
  source = pretrained[PRETRAINED_PART]
  ours, theirs = jax.tree.structure(params[PRETRAINED_PART]), jax.tree.structure(source)
  if ours != theirs:
    raise ValueError(f"the pretrained encoder's parameters are not this encoder's: {theirs} != {ours}; give the "
                     "fine-tuning run the pretrained run's config.model keys")
  flat, _ = jax.tree_util.tree_flatten_with_path(params[PRETRAINED_PART])
  for (path, mine), theirs in zip(flat, jax.tree.leaves(source)):
    if mine.shape != theirs.shape:
      raise ValueError(f"the pretrained encoder's {jax.tree_util.keystr(path)} is {theirs.shape}, this encoder's "
                       f"{mine.shape}")
  return {**params, PRETRAINED_PART: jax.tree.map(lambda mine, theirs: theirs.astype(mine.dtype),
                                                  params[PRETRAINED_PART], source)}


@register("supervised")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  augment_config = augment.make_config(config.augment)

  def loss(params, model_state, batch, keys):
    if "label" not in batch:
      raise ValueError("the supervised objective needs labelled batches (a 'label' entry)")
    images = augment.views(keys, batch["image"], augment_config, num_views=1)[0]  # (n, H, W, C)
    (_, logits), updates = train_net.apply(
        {"params": params, **model_state}, images, train=True, mutable=["batch_stats"]
    )
    labels = batch["label"]
    value = losses.classification_loss(logits, labels, axis_name=DATA_AXIS)
    return value, LossAux(
        model_state=dict(updates),
        metrics={"train_accuracy": losses.accuracy(logits, labels, axis_name=DATA_AXIS)},
    )

  def predict(params, model_state, batch):
    _, logits = local_net.apply({"params": params, **model_state}, common.to_unit_range(batch["image"]),
                                train=False)
    return logits  # (B, num_classes)

  return Objective(
      name="supervised", family=FAMILY, init=common.init_fn(local_net), loss=loss,
      features=common.features_fn(local_net),
      calibrate=common.calibrate_fn(network(common.calibration_config(config), None)),
      load_pretrained=load_pretrained, extras={"predict": predict},
  )
