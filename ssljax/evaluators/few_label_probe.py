"""few_label_probe: the linear probe (`linear_probe`) fit on `labels_per_class` training labels
of every class, mean and std over `draws` draws of the labelled subset (draw d uses seed
`eval.seed + d`), for the run's encoder and its baselines."""

from __future__ import annotations

import numpy as np

from ssljax.evaluate import linear_probe
from ssljax.evaluators import Evaluator, image_encoders, register
from ssljax.evaluators.linear_probe import L2_CANDIDATES


def labelled_subsets(labels: np.ndarray, per_class: int, draws: int, seed: int, where: str) -> list[np.ndarray]:
  """Each draw's indices of `per_class` examples of every class (draw d: seed + d); a class with
  fewer examples is an error that names the option to lower."""
  try:
    return [linear_probe.labels_per_class_subset(labels, per_class, seed=seed + d) for d in range(draws)]
  except ValueError as error:
    raise ValueError(f"config.{where}.labels_per_class={per_class}: in the training split, {error}; lower it "
                     f"(--config.{where}.labels_per_class=N)") from error


def draws_accuracy(train_x, train_y, x, y, *, num_classes: int, options, seed: int, where: str) -> dict:
  """{"mean", "std", "draws"}: the accuracy on (x, y) of the probe fit on `options.labels_per_class`
  of the training labels of every class, for each of `options.draws` draws (its L2 penalty chosen
  among `options.l2` by cross-validation on the draw's labels)."""
  subsets = labelled_subsets(train_y, options.labels_per_class, options.draws, seed, where)
  draws = [linear_probe.accuracy(train_x[s], train_y[s], x, y, num_classes=num_classes, l2=options.l2,
                                 max_steps=options.max_steps) for s in subsets]
  return {"mean": float(np.mean(draws)), "std": float(np.std(draws)), "draws": draws}


@register("few_label_probe", labels_per_class=10, draws=5, l2=L2_CANDIDATES, max_steps=500)
def make(context, options) -> Evaluator:
  if options.labels_per_class < 1 or options.draws < 1:
    raise ValueError(f"config.evals.few_label_probe: labels_per_class and draws must be >= 1, got "
                     f"{options.labels_per_class} and {options.draws}")
  name = context.objective.name
  seed = context.config.eval.seed

  def run(params, model_state, split):
    classes = image_encoders.num_classes(context)

    def score(train_x, train_y, x, y):
      return draws_accuracy(train_x, train_y, x, y, num_classes=classes, options=options, seed=seed,
                            where="evals.few_label_probe")

    accuracies = image_encoders.score_encoders(context, params, model_state, split, ("few_label_probe", repr(options)),
                                               score)
    return {"labels_per_class": options.labels_per_class, "accuracy": accuracies}

  def format(report):
    title = (f"Linear probe, {report['labels_per_class']} labels per class (top-1 accuracy, mean ± std over "
             f"{len(next(iter(report['accuracy'].values()))['draws'])} draws):")
    return image_encoders.format_accuracies(title, report["accuracy"])

  return Evaluator(name="few_label_probe", run=run, format=format,
                   scalars=lambda report: {"accuracy": report["accuracy"][name]["mean"]})
