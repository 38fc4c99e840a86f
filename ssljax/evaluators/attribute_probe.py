"""attribute_probe: how linearly an image-text run's image tower separates each labelled
attribute of the images (shapes' shape and colour), with few labels: the few-label linear probe
(`few_label_probe.draws_accuracy`: `labels_per_class` labels of every class drawn from the first
`pool` training images, mean and std over `draws` draws, draw d by seed `eval.seed + d`) on the
tower's features (`objective.features`, before the projection into the joint space), scored on
a split's first `examples` images, and on the held-out split too beside the test split
(`image_text_embeddings.evaluation_splits`).

Beside the run's tower: the baselines of `config.eval.baselines`, "random_init" (the same
architecture at initialisation, residual scales at 1, BatchNorm statistics calibrated on
`eval.calibration_examples` training images: `image_encoders.random_init_encoder`) and
"raw_pixels"; and chance (1 / classes).
"""

from __future__ import annotations

import functools

import numpy as np

from ssljax import data
from ssljax.evaluate import features as features_lib
from ssljax.evaluators import Evaluator, image_encoders, image_text_embeddings, register
from ssljax.evaluators.few_label_probe import draws_accuracy
from ssljax.evaluators.linear_probe import L2_CANDIDATES
from ssljax.families import image_text


def image_only(config):
  """record -> {"image"}: what the image tower's features need."""
  return lambda record: {"image": data.prepare_image(record["image"], config.data.image_size)}


def image_and_empty_caption(config):
  """record -> {"image", "tokens"}, the caption all padding: the inputs of the objective's init
  (which reads only the tokens' shape), for the random-init tower's calibration batch."""
  return lambda record: {"image": data.prepare_image(record["image"], config.data.image_size),
                         "tokens": np.zeros((config.text.seq_len,), np.int32)}


def baseline_encoder(config, name: str) -> image_encoders.Encoder:
  if name == "random_init":
    batch = image_encoders.calibration_batch(config, image_and_empty_caption(config))
    return image_encoders.random_init_encoder(config, batch)
  if name == "raw_pixels":
    return features_lib.raw_pixels
  raise ValueError(f"config.eval.baselines: unknown baseline {name!r}; choose among {image_encoders.BASELINES}")


def split_features(encode: image_encoders.Encoder, config, split: str, count: int) -> np.ndarray:
  """(N, D) features of a split's first `count` images."""
  source = data.open_split(config.data, split)
  x, _ = features_lib.extract(encode, source, image_only(config), batch_size=config.eval.batch_size,
                              indices=range(min(count, len(source))))
  return x


def split_attributes(config, split: str, count: int, attributes) -> dict[str, np.ndarray]:
  """{attribute: (N,) labels} of a split's first `count` records."""
  source = data.open_split(config.data, split)
  records = source.__getitems__(range(min(count, len(source))))
  return {a: np.asarray([int(r[a]) for r in records]) for a in attributes}


@register("attribute_probe", attributes=("shape", "colour"), pool=2000, examples=1000, labels_per_class=10, draws=5,
          l2=L2_CANDIDATES, max_steps=500)
def make(context, options) -> Evaluator:
  if min(options.pool, options.examples, options.labels_per_class, options.draws) < 1:
    raise ValueError(f"config.evals.attribute_probe: pool, examples, labels_per_class and draws must be >= 1, got "
                     f"{options.pool}, {options.examples}, {options.labels_per_class} and {options.draws}")
  config = context.config
  name = context.objective.name
  attributes = [a for a in options.attributes if image_text.class_names(config, a) is not None]
  num_classes = {a: len(image_text.class_names(config, a)) for a in attributes}
  train_split = config.data.train_split

  def labels(split: str, count: int) -> dict[str, np.ndarray]:
    return context.lasting(("attribute labels", split, count, tuple(attributes)),
                           functools.partial(split_attributes, config, split, count, attributes))

  def features(encoder: str, encode, split: str, count: int) -> np.ndarray:
    """The run's tower: once per round; a baseline's: once per run."""
    cache = context.shared if encoder == name else context.lasting
    return cache(("image-text tower features", encoder, split, count),
                 functools.partial(split_features, encode, config, split, count))

  def encoders(params, model_state) -> dict:
    out = {name: functools.partial(context.objective.features, params, model_state)}
    for baseline in config.eval.baselines:
      out[baseline] = context.lasting(("image-text baseline", baseline),
                                      functools.partial(baseline_encoder, config, baseline))
    return out

  def run(params, model_state, split):
    if not attributes:
      return {"labels_per_class": options.labels_per_class, "splits": {}}
    splits = image_text_embeddings.evaluation_splits(config, split)
    report = {s: {a: {} for a in attributes} for s in splits}
    train_y = labels(train_split, options.pool)
    for encoder, encode in encoders(params, model_state).items():
      train_x = features(encoder, encode, train_split, options.pool)
      for s in splits:
        x, y = features(encoder, encode, s, options.examples), labels(s, options.examples)
        for a in attributes:
          score = functools.partial(draws_accuracy, train_x, train_y[a], x, y[a], num_classes=num_classes[a],
                                    options=options, seed=config.eval.seed, where="evals.attribute_probe")
          report[s][a][encoder] = (score() if encoder == name else
                                   context.lasting(("attribute_probe", repr(options), encoder, s, a), score))
    for s in splits:
      for a in attributes:
        report[s][a]["chance"] = 1.0 / num_classes[a]
    return {"labels_per_class": options.labels_per_class, "splits": report}

  def format(report):
    if not report["splits"]:
      return (f"Linear probe on image features: none of the attributes {tuple(options.attributes)} is labelled in "
              f"{config.data.name}")
    blocks = []
    for split, rows in report["splits"].items():
      lines = [f"Linear probe on image features, {report['labels_per_class']} labels per class, {split} "
               "(mean ± std over label draws):"]
      for attribute, row in rows.items():
        cells = [f"{encoder} {v['mean']:.4f} ± {v['std']:.4f}" for encoder, v in row.items() if encoder != "chance"]
        lines.append(f"  {attribute:<10}" + "   ".join(cells) + f"   chance {row['chance']:.4f}")
      blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

  def scalars(report):
    """The run's tower's mean accuracy of each attribute on the split evaluated ("shape")."""
    evaluated = next(iter(report["splits"].values()), {})
    return {attribute: row[name]["mean"] for attribute, row in evaluated.items()}

  return Evaluator(name="attribute_probe", run=run, format=format, scalars=scalars)
