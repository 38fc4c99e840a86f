"""Fine-tuning a pretrained BERT encoder with a task head, as an ordinary run of the trainer
(Devlin et al. 2019, arXiv 1810.04805, section 4).

`config.init_from` names the pretrained run: its config.json gives the encoder's shape
(`common.bert_encoder_config`, through `models.from_config`) and its workdir the tokenizer; when the
run starts, the trainer hands that run's parameters to `load_pretrained`, which copies its
"encoder" and "pooler" into the fresh model (`heads.load_pretrained`; `config.init="scratch"`
keeps the random ones, the from-scratch baseline). init_from may also name a fine-tuning run
of the same task and model (LP-FT's start, `ssljax.finetune.protocol`): every parameter is then
copied, and the BERT run is the one that run names. The heads are `heads.FinetuneModel`'s, the
losses `ssljax.losses`' (`heads.loss_fn`), global over the devices:

  classify, pair: - sum_b w_b log p(label_b) / sum_b w_b
  tag:            the mean over the global batch's labelled tokens
  span:           (CE(start) + CE(end)) / 2 over the context positions, mean over rows

with w_b = 0 for padding rows. Dropout (`config.dropout`, in the encoder and before the head)
draws each example's masks from that example's key: the forward pass runs per example (vmap),
so the masks, like everything else, do not depend on how the batch is split over devices.

Extras: "encoder_config", "encoder" (the task's `inputs.Encoder`: the pretrained run's tokenizer
and sequence length), "predict" (params, batch) -> the head's outputs for scoring
(`heads.predict_fn`); the task_metrics evaluator reads the last two.
"""

from __future__ import annotations

import jax
import ml_collections

from ssljax import losses
from ssljax import workdir as workdir_lib
from ssljax.families import finetune_tasks
from ssljax.downstream import heads, inputs, tasks
from ssljax.interface import DATA_AXIS, LossAux, Objective, register
from ssljax.models import from_config
from ssljax.objectives import common
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.text import vocab

INITS = ("pretrained", "scratch")


def pretrained_run(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, str, bool]:
  """(its config, its workdir) of the BERT run that `config.init_from` names, directly or through
  a fine-tuning run of it (LP-FT's fitted start), and whether init_from is such a fine-tuning
  run (whose parameters are then taken whole)."""
  source = config.get("init_from")
  if not source:
    raise ValueError("the finetune objective needs config.init_from: the workdir of a finished BERT run "
                     "(`ssljax train --config configs/bert.py`)")
  source_config = workdir_lib.load_config(source)
  if source_config.objective == "finetune":
    bert_config, bert_workdir, _ = pretrained_run(source_config)
    return bert_config, bert_workdir, True
  if source_config.objective != "bert":
    raise ValueError(f"config.init_from={source!r} is a {source_config.objective!r} run; fine-tuning needs a "
                     "BERT run (an encoder under params['encoder'])")
  return source_config, source, False


@register("finetune")
def make(config: ml_collections.ConfigDict) -> Objective:
  if config.init not in INITS:
    raise ValueError(f"config.init must be one of {INITS}, got {config.init!r}")
  bert_config, bert_workdir, whole = pretrained_run(config)
  # The pretrained encoder, with this run's dropout and compute dtype.
  cfg = common.bert_encoder_config(bert_config).replace(dropout=config.dropout,
                                                 dtype=from_config.resolve_dtype(config.model.dtype))
  task = tasks.for_config(config)
  pad_id = vocab.special_roles(bert_config, ("pad",), "fine-tuning")["pad"]  # the pretrained run's
  tokenizer = tokenizer_lib.load(bert_workdir)
  encoder = inputs.encoder_for(tokenizer, task.kind, cfg.max_len, config)
  model = heads.FinetuneModel(cfg, task.kind, task.num_labels, config.dropout, config.pooling, pad_id)
  loss_of = heads.loss_fn(task.kind, axis_name=DATA_AXIS)
  predict_of = heads.predict_fn(task.kind, config.max_answer_len)

  def init(key, batch):
    return model.init({"params": key}, batch)["params"], {}

  def load_pretrained(params, pretrained):
    if whole:  # a fine-tuning run of this task: every parameter, its head too
      return heads.load_pretrained(params, pretrained, whole=True)
    return heads.load_pretrained(params, pretrained) if config.init == "pretrained" else params

  def loss(params, model_state, batch, keys):
    def forward(example, key):  # one example, its own dropout key
      one = jax.tree.map(lambda x: x[None], example)
      out = model.apply({"params": params}, one, train=True, rngs={"dropout": key})
      return jax.tree.map(lambda x: x[0], out)

    out = jax.vmap(forward)(batch, keys)  # (n, K), (n, T, K) or two (n, T)
    value = loss_of(out, batch)
    metrics = {}
    if task.kind in (heads.CLASSIFY, heads.PAIR):
      metrics["accuracy"] = losses.accuracy(out, batch["label"], weights=batch["weight"], axis_name=DATA_AXIS)
    return value, LossAux(model_state=model_state, metrics=metrics)

  def features(params, model_state, batch):
    hidden = heads.encode(cfg, params["encoder"], batch, pad_id)  # (B, T, D)
    return heads.pool(hidden, batch["tokens"] != pad_id, "mean")  # (B, D)

  def predict(params, batch):
    return predict_of(model.apply({"params": params}, batch), batch)

  return Objective(name="finetune", family=finetune_tasks.family(encoder), init=init, loss=loss, features=features,
                   load_pretrained=load_pretrained,
                   extras={"encoder_config": cfg, "encoder": encoder, "predict": predict})
