"""The finetune_tasks family: the labelled examples of a downstream task (`ssljax.downstream.tasks`)
for a head on a pretrained encoder.

- Input: the task's training examples (at most `max_train_examples`, a fixed random choice),
  and of those the labelled subset of draw `draw` under the label budget (`labels_per_class` or
  `label_fraction`; all of them by default), as a random-access source. The host turns each
  into its fixed-length encoder input with the task encoder's `train_feature`
  (`ssljax.downstream.inputs`); an example that yields none (a span answer outside every window)
  becomes a padding row of weight 0, which no loss counts.

What a run reports is the task_metrics evaluator's (`ssljax.evaluators.task_metrics`), which
`config.evals` names. The family depends on the task encoder (tokenizer and sequence length of
the pretrained run), so an objective makes its own with `family(encoder)`; it reads the config
keys task, max_train_examples, labels_per_class, label_fraction, draws, draw, data_dir and splits.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ssljax.downstream import examples, inputs, tasks
from ssljax.interface import Family, TrainInput


@dataclasses.dataclass(frozen=True)
class TrainFeature:
  """record_fn: a task example -> its training feature with "weight" 1, or `template` with
  weight 0 where the example yields none, so that every record is one row of one shape."""

  encoder: inputs.Encoder
  template: dict

  def __call__(self, example: dict) -> dict:
    feature = self.encoder.train_feature(example)
    weight = np.float32(feature is not None)
    return {**(self.template if feature is None else feature), "weight": weight}


def labelled_examples(config: ml_collections.ConfigDict, task: tasks.Task):
  """The training examples of draw `config.draw` of the label budget, as a random-access source."""
  train = examples.capped(task.read(config, "train"), config.max_train_examples, config.seed)
  subsets = examples.label_subsets(task, train, config)
  if not 0 <= config.draw < len(subsets):
    raise ValueError(f"config.draw={config.draw} is not one of the {len(subsets)} label draws "
                     f"(config.draws={config.draws} under a label budget, 1 with all labels)")
  return examples.Subset(train, subsets[config.draw])


def family(encoder: inputs.Encoder) -> Family:
  """The family of fine-tuning runs whose examples `encoder` turns into inputs."""

  def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
    del workdir  # the tokenizer is the pretrained run's
    source = labelled_examples(config, tasks.for_config(config))
    template = examples.template_feature(encoder, source)
    return TrainInput(source=source, record_fn=TrainFeature(encoder, template), unit="examples")

  return Family(name="finetune_tasks", train_input=train_input)
