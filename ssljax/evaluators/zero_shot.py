"""zero_shot: zero-shot classification of labelled attributes from prompts alone (Radford et al.
2021, Section 3.1; `ssljax.evaluate.zero_shot`), on a split's first `examples` images and on the
held-out split beside the test split (`image_text_embeddings.evaluation_splits`).

Each attribute of `attributes` that the dataset labels (a ClassLabel with a prompt ensemble in
ENSEMBLES: shapes' shape and colour), and the shape-colour combination when both are, is scored
with one template (`template`, the paper's "a photo of a {}."), with a prompt ensemble written
like the captions (a class's weight is the normalised mean of its prompts' normalised
embeddings) and with the ensemble's nearest prompt, beside chance (1 / classes). The report
also holds the learned logit scale, the temperature of the zero-shot softmax (`ssljax
zero-shot`'s probabilities; accuracy does not depend on it).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ssljax.data import shapes
from ssljax.evaluate import zero_shot
from ssljax.evaluators import Evaluator, image_text_embeddings, register
from ssljax.families import image_text

# Prompt ensembles for the `shapes` attributes, written like its captions. "{}" is the class
# name; the other fields are filled with every value of that attribute, so "a {size} {colour} {}
# {where}" is 2 x 5 x 5 = 50 prompts per shape.
ENSEMBLES = {
    "shape": ("a {size} {colour} {} {where}", "there is a {size} {colour} {} {where}"),
    "colour": ("a {size} {} {shape} {where}", "there is a {size} {} {shape} {where}"),
    "combination": ("a {size} {} {where}", "there is a {size} {} {where}"),
}


def tasks(config: ml_collections.ConfigDict, attributes) -> dict[str, dict]:
  """The zero-shot tasks the dataset supports: {task: {"names", "ensemble"}} for each ClassLabel
  attribute of `attributes` with a prompt ensemble in ENSEMBLES, and the shape-colour combination
  when both exist."""
  vocabularies = {name: image_text.class_names(config, name) for name in ("shape", "colour", "size", "position")}
  vocabularies = {k: v for k, v in vocabularies.items() if v is not None}
  if "position" in vocabularies:  # as the captions say it: "in the top left", "at the bottom right"
    vocabularies["where"] = tuple(shapes.where(p) for p in vocabularies.pop("position"))
  out = {}
  for attribute in attributes:
    if attribute in vocabularies and attribute in ENSEMBLES:
      others = {k: v for k, v in vocabularies.items() if k != attribute}
      out[attribute] = {"names": vocabularies[attribute],
                        "ensemble": zero_shot.expand_templates(ENSEMBLES[attribute], others)}
  if "shape" in out and "colour" in out:
    names = tuple(f"{c} {s}" for s in vocabularies["shape"] for c in vocabularies["colour"])
    out["combination"] = {"names": names, "ensemble": zero_shot.expand_templates(
        ENSEMBLES["combination"], {k: v for k, v in vocabularies.items() if k in ("size", "where")})}
  return out


def task_labels(records: list[dict], task: str, config: ml_collections.ConfigDict) -> np.ndarray:
  """(N,) class indices of a task; the combination's is shape x colours + colour, the order of
  its names."""
  if task == "combination":
    num_colours = len(image_text.class_names(config, "colour"))
    return np.asarray([int(r["shape"]) * num_colours + int(r["colour"]) for r in records])
  return np.asarray([int(r[task]) for r in records])


@register("zero_shot", attributes=("shape", "colour"), template="a photo of a {}.", examples=1000)
def make(context, options) -> Evaluator:
  if options.examples < 1:
    raise ValueError(f"config.evals.zero_shot.examples must be >= 1, got {options.examples}")
  config = context.config
  spec = tasks(config, options.attributes)

  def run(params, model_state, split):
    embed_prompts = image_text_embeddings.prompt_embedder(context, params, model_state)
    splits = {}
    for s in image_text_embeddings.evaluation_splits(config, split) if spec else []:
      image_emb, _, records = image_text_embeddings.embeddings(context, params, model_state, s, options.examples)
      splits[s] = {task: zero_shot.accuracies(image_emb, task_labels(records, task, config), embed_prompts,
                                              task_spec["names"], options.template, task_spec["ensemble"])
                   for task, task_spec in spec.items()}
    return {"template": options.template, "logit_scale": float(context.objective.extras["logit_scale"](params)),
            "splits": splits}

  def format(report):
    blocks = [f"Zero-shot classification (one template: {report['template']!r}; logit scale "
              f"{report['logit_scale']:.1f})"]
    if not report["splits"]:
      blocks[0] += f": none of the attributes {tuple(options.attributes)} is labelled in {config.data.name}"
    for split, rows in report["splits"].items():
      lines = [f"Zero-shot accuracy, {split}:",
               f"{'task':<14}{'one template':>14}{'ensemble':>12}{'nearest prompt':>16}{'chance':>10}"]
      for task, row in rows.items():
        lines.append(f"{task:<14}{row['single_template']:>14.4f}{row['ensemble']:>12.4f}"
                     f"{row['nearest_prompt']:>16.4f}{row['chance']:>10.4f}")
      blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

  def scalars(report):
    """The prompt ensemble's accuracy of each task on the split evaluated ("shape")."""
    evaluated = next(iter(report["splits"].values()), {})
    return {task: row["ensemble"] for task, row in evaluated.items()}

  return Evaluator(name="zero_shot", run=run, format=format, scalars=scalars)
