"""knn: weighted k-nearest-neighbour accuracy of the frozen features (`ssljax.evaluate.knn`:
each of the `k` nearest training features by cosine votes with weight exp(s / temperature)),
for the run's encoder and its baselines."""

from __future__ import annotations

from ssljax.evaluate import knn
from ssljax.evaluators import Evaluator, image_encoders, register


@register("knn", k=20, temperature=0.07)
def make(context, options) -> Evaluator:
  name = context.objective.name

  def run(params, model_state, split):
    classes = image_encoders.num_classes(context)
    def score(train_x, train_y, x, y):
      return knn.knn_accuracy(train_x, train_y, x, y, num_classes=classes, k=options.k,
                              temperature=options.temperature)

    accuracies = image_encoders.score_encoders(context, params, model_state, split, ("knn", repr(options)),
                                               score)
    return {"k": options.k, "accuracy": accuracies}

  return Evaluator(
      name="knn", run=run,
      format=lambda report: image_encoders.format_accuracies(
          f"Weighted kNN, k = {report['k']} (top-1 accuracy):", report["accuracy"]),
      scalars=lambda report: {"accuracy": report["accuracy"][name]})
