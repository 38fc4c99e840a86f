"""task_metrics: a fine-tuned model's scores on its downstream task (`ssljax.downstream.tasks`).

The head's predictions (the objective's extras "predict", `heads.predict_fn`: a class, a tag per
word, or an answer span) on the split's examples ("validation", "test": the roles that
config.data.eval_split and config.data.test_split name) are scored with the task's metrics
(`ssljax.downstream.examples.score`: accuracy; tagging precision, recall, F1 and entity F1; span
exact match and F1). The examples become the model's inputs as in training, through the task
encoder (extras "encoder": the pretrained run's tokenizer and sequence length), in batches of
config.eval.batch_size; `max_examples` > 0 scores a fixed random choice of that many (by
config.seed; 0: every example).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import ml_collections

from ssljax.downstream import examples as examples_lib
from ssljax.downstream import tasks
from ssljax.evaluators import Evaluator, register

# The report's description of what was scored; its other keys are the task's metrics.
DESCRIPTION = ("task", "split", "metric", "examples")


def split_examples(config: ml_collections.ConfigDict, task: tasks.Task, split: str, max_examples: int) -> Sequence:
  """The examples of one role of the task, at most `max_examples` (0: all), chosen by config.seed."""
  if split not in tasks.ROLES:
    raise ValueError(f"a fine-tuning task is evaluated on one of its roles {tasks.ROLES}, not {split!r} "
                     "(config.data.eval_split, config.data.test_split)")
  return examples_lib.capped(task.read(config, split), max_examples, config.seed)


def scores(report: dict) -> dict[str, float]:
  """The task's metrics of a report, without its description."""
  return {k: v for k, v in report.items() if k not in DESCRIPTION}


def format_report(report: dict) -> str:
  """The task's metrics on the split, the headline one first."""
  metrics = scores(report)
  names = sorted(metrics, key=lambda name: name != report["metric"])
  lines = [f"Fine-tuned on {report['task']}: its {report['split']} split ({report['examples']} examples)"]
  lines += [f"  {name:<16}{metrics[name]:.4f}" for name in names]
  return "\n".join(lines)


@register("task_metrics", max_examples=0)
def make(context, options) -> Evaluator:
  if options.max_examples < 0:
    raise ValueError("config.evals.task_metrics.max_examples must be >= 0 (0: every example), "
                     f"got {options.max_examples}")
  extras = context.objective.extras
  if "encoder" not in extras or "predict" not in extras:
    raise ValueError(f"the task_metrics evaluator scores a fine-tuning run (objective 'finetune'); the "
                     f"{context.objective.name!r} objective has no extras 'encoder' and 'predict'")
  config = context.config
  task = tasks.for_config(config)
  encoder, predict = extras["encoder"], jax.jit(extras["predict"])

  def run(params, model_state, split):
    del model_state  # the heads keep no state besides their parameters
    examples = context.lasting(("task examples", split, options.max_examples),
                               functools.partial(split_examples, config, task, split, options.max_examples))
    predictions, gold = examples_lib.predictions(task.kind, encoder, functools.partial(predict, params), examples,
                                                 config.eval.batch_size)
    return {"task": task.name, "split": split, "metric": task.metric, "examples": len(gold),
            **examples_lib.score(task, predictions, gold)}

  return Evaluator(name="task_metrics", run=run, format=format_report, scalars=scores)
