"""linear_probe: multinomial logistic regression on the frozen features with every training
label (`ssljax.evaluate.linear_probe`: L-BFGS, the L2 penalty chosen among `l2` by 3-fold
cross-validation on the training split), fit on the training split and scored on the split
evaluated, for the run's encoder and its baselines."""

from __future__ import annotations

from ssljax.evaluate import linear_probe
from ssljax.evaluators import Evaluator, image_encoders, register

L2_CANDIDATES = (1e-4, 1e-3, 1e-2, 1e-1)


@register("linear_probe", l2=L2_CANDIDATES, max_steps=500)
def make(context, options) -> Evaluator:
  name = context.objective.name

  def run(params, model_state, split):
    classes = image_encoders.num_classes(context)
    def score(train_x, train_y, x, y):
      return linear_probe.accuracy(train_x, train_y, x, y, num_classes=classes, l2=options.l2,
                                   max_steps=options.max_steps)

    accuracies = image_encoders.score_encoders(context, params, model_state, split, ("linear_probe", repr(options)),
                                               score)
    return {"accuracy": accuracies}

  return Evaluator(
      name="linear_probe", run=run,
      format=lambda report: image_encoders.format_accuracies("Linear probe, every training label (top-1 accuracy):",
                                                             report["accuracy"]),
      scalars=lambda report: {"accuracy": report["accuracy"][name]})
