"""LP-FT's head fit on the frozen encoder (`Runner.fit_head`, Kumar et al. 2022, arXiv
2202.10054) and the batch size of a label budget: fine-tuning's pieces outside the trainer. The
training itself is the trainer's (the "finetune" objective, objectives/finetune.py), and
`protocol.py` runs the trials and chooses among them; the examples, predictions, scores and
baselines are `ssljax.downstream`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssljax.downstream import heads, inputs
from ssljax.downstream.examples import budget_name, predictions, read_at, score
from ssljax.downstream.tasks import Task
from ssljax.evaluate import linear_probe
from ssljax.finetune import with_overrides
from ssljax.models.transformer import TransformerConfig
from ssljax.text.tokenizer import Tokenizer


# The head-fitting probe keeps every labelled example's (T, D) states: 4,096 are 268 MB at 128
# tokens of width 128 (all of bbc_same_article's 3,562 pairs) and 4.8 GB for BERT-base at 384.
PROBE_MAX_EXAMPLES = 4096


def for_label_budget(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config a run trains with: under a label budget (anything but all labels),
  `few_label_batch_size`, where set, replaces `batch_size` (10 bbc_topic articles a class are 50
  examples: 2 batches of 32, 4 of 16)."""
  if budget_name(config) == "all" or not config.get("few_label_batch_size"):
    return config
  return with_overrides(config, {"batch_size": config.few_label_batch_size})


class Runner:
  """A task's model and encoder of examples on one device, outside the trainer: initialising it
  (with the pretrained encoder), LP-FT's head fitting (`fit_head`) and prediction. Training is
  the trainer's (`protocol.py`, objectives/finetune.py)."""

  def __init__(self, task: Task, encoder_config: TransformerConfig, tokenizer: Tokenizer,
               config: ml_collections.ConfigDict):
    self.task, self.config = task, config
    pad_id = tokenizer.special_id("pad")
    self.model = heads.FinetuneModel(encoder_config.replace(dropout=config.dropout), task.kind,
                                     task.num_labels, config.dropout, config.pooling, pad_id)
    self.encoder = inputs.encoder_for(tokenizer, task.kind, encoder_config.max_len, config)
    loss_of = heads.loss_fn(task.kind)
    predict_of = heads.predict_fn(task.kind, config.max_answer_len)
    model = self.model
    self.encode = jax.jit(lambda encoder_params, batch: heads.encode(encoder_config, encoder_params, batch, pad_id))

    def head_loss(head_params, batch, hidden):  # the head alone on the frozen encoder's states, without dropout
      return loss_of(model.apply({"params": head_params}, batch, hidden=hidden), batch)

    self.head_loss = head_loss  # one function object: every draw's head fit shares its compilation
    self.init_params = jax.jit(lambda key, batch: model.init({"params": key}, batch)["params"])
    # Every parameter lives on this device, committed, as the pretrained ones arrive from the
    # checkpoint: a mix of committed and uncommitted arguments would compile twice.
    self.device = jax.local_devices()[0]
    self.predict = jax.jit(lambda params, batch: predict_of(model.apply({"params": params}, batch), batch))

  def init(self, key, template: dict, pretrained: dict | None = None):
    """A fresh model whose "encoder" (and "pooler", `heads.load_pretrained`) are copies of
    `pretrained`'s; with None everything is random (the from-scratch baseline)."""
    batch = inputs.collate([template], 1, template)
    params = self.init_params(key, batch)
    if pretrained:
      params = heads.load_pretrained(params, pretrained)
    return jax.device_put(params, self.device)

  def fit_head(self, params, train: Sequence[dict], indices: np.ndarray, template: dict) -> tuple[Any, dict]:
    """LP-FT's first stage (Kumar et al. 2022, arXiv 2202.10054): the head alone minimises the
    task's loss over the frozen encoder's states of the labelled examples by full-batch L-BFGS
    (`linear_probe.minimise`: at most `probe_steps` iterations, no learning rate), so that
    fine-tuning starts from a head that already fits them rather than a random one (which with
    a few labels moves too little in a few dozen steps: the cosine pair head's threshold must
    travel to where the pairs' cosines lie). No-op when probe_steps is 0. The states are kept
    in memory, so at most PROBE_MAX_EXAMPLES labelled examples take part. Returns the parameters
    and the fit's record: its examples, the L-BFGS iterations taken, and the loss before and after."""
    c = self.config
    if c.probe_steps < 0:
      raise ValueError(f"config.probe_steps must be >= 0, got {c.probe_steps}")
    if not c.probe_steps:
      return params, {}
    if len(indices) > PROBE_MAX_EXAMPLES:  # a fixed random subset, in order
      rng = np.random.default_rng(c.seed)
      indices = np.sort(rng.choice(indices, size=PROBE_MAX_EXAMPLES, replace=False))
    size = c.eval_batch_size
    batches, hidden = [], []
    for start in range(0, len(indices), size):  # (N, T, D) states, encoded a batch at a time
      features = [self.encoder.train_feature(e) for e in read_at(train, indices[start:start + size])]
      batch = inputs.collate(features, size, template)
      batches.append(batch)
      hidden.append(self.encode(params["encoder"], batch))
    batch = jax.tree.map(lambda *xs: np.concatenate(xs), *batches)
    hidden = jnp.concatenate(hidden)
    head = {name: value for name, value in params.items() if name != "encoder"}
    fitted = linear_probe.minimise(self.head_loss, head, batch, hidden, max_steps=c.probe_steps)
    return {**params, **fitted.params}, {"probe_examples": len(indices), "probe_iterations": int(fitted.steps),
                                         "probe_loss_start": float(fitted.start_value),
                                         "probe_loss_end": float(fitted.value)}

  def evaluate(self, params, examples: Sequence[dict], *, progress: bool = False, desc: str = "eval") -> dict:
    """The task's metrics on `examples`, streamed in batches."""
    predictions, gold = self.predictions(params, examples, progress=progress, desc=desc)
    return score(self.task, predictions, gold)

  def predictions(self, params, examples: Sequence[dict], *, progress: bool = False,
                  desc: str = "eval") -> tuple[list, list]:
    return predictions(self.task.kind, self.encoder, functools.partial(self.predict, params), examples,
                       self.config.eval_batch_size, progress=progress, desc=desc)
