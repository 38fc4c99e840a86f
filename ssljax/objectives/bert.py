"""BERT: masked-LM and next-sentence prediction with a bidirectional Transformer encoder
(Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", arXiv 1810.04805, Section 3.1).

  loss = masked-LM + nsp_weight * next-sentence    (config.loss.nsp_weight; BERT: 1)

  masked-LM = - sum_{b,p} w[b,p] log p(target[b,p] | masked sequence b) / sum_{b,p} w[b,p]
  next-sentence = - 1/N sum_b log p(nsp_label[b] | pooled [CLS] of b)

both as global means over every device (`losses.masked_lm_loss` and
`losses.classification_loss` with axis_name=DATA_AXIS): a device with more predictions counts
for more, exactly as on one device. The masks (15% of the ordinary tokens; 80% [MASK], 10% a
random token, 10% unchanged) are drawn on the device from the step's per-example keys
(`ssljax.text.masking`), so they change every step and do not depend on the device count. The
sentence pairs `[CLS] A [SEP] B [SEP]` and their labels come from the host
(`ssljax.text.pairs`, through the masked_text family).

The network (`BertPretraining`):
- "encoder": `models.Transformer` with causal=False and two segment embeddings, padded keys
  masked out. Its parameters are `params["encoder"]` and its config `extras["encoder_config"]`:
  what fine-tuning takes from a pretrained run.
- "mlm_transform" (dense + GELU + LayerNorm, BERT's `cls/predictions/transform`), then the tied
  token embedding and an output bias per token ("mlm_output_bias"). The hidden states are
  gathered at the predicted positions *before* the vocabulary projection: (n, P, V) logits, not
  (n, T, V).
- "pooler" (dense + tanh on the [CLS] state) and "nsp_classifier" (two classes; 1 = IsNext).

`features` is the pooled [CLS] vector (what fine-tuning classifies from). Extras: "model" (the
encoder module), "encoder_config", "pretraining_model", "mlm_logits" (params, tokens, segments,
positions) -> float32 (n, P, V) and "nsp_logits" (params, tokens, segments) -> float32 (n, 2),
for evaluation and fill-in-the-blank demos.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ssljax import losses
from ssljax.families import masked_text
from ssljax.models import transformer
from ssljax.interface import DATA_AXIS, LossAux, Objective, register
from ssljax.objectives import common
from ssljax.text import masking, vocab



class BertPretraining(nn.Module):
  """The encoder and BERT's two pretraining heads; see the module docstring."""

  config: transformer.TransformerConfig
  pad_id: int  # the tokenizer's [PAD]: keys holding it are masked out
  # BERT's exact (erf) GELU in its prediction head, whatever the blocks use (a Hugging Face
  # checkpoint's `hidden_act` sets both).
  head_activation: str = "gelu"

  def setup(self):
    cfg = self.config
    dense = functools.partial(nn.Dense, dtype=cfg.dtype, param_dtype=jnp.float32,
                              kernel_init=nn.initializers.normal(transformer.INIT_STD))
    self.encoder = transformer.Transformer(cfg)
    self.mlm_transform = dense(cfg.embed_dim)
    self.mlm_norm = nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, param_dtype=jnp.float32)
    self.mlm_output_bias = self.param("mlm_output_bias", nn.initializers.zeros, (cfg.vocab_size,))
    self.pooler = dense(cfg.embed_dim)
    self.nsp_classifier = dense(2)

  def encode(self, tokens, segments, train: bool = False):
    """(n, T) tokens and segments -> (n, T, D) hidden states; [PAD] keys are masked out."""
    return self.encoder(tokens, segments=segments, padding_mask=tokens != self.pad_id, train=train)

  def mlm_logits(self, hidden):
    """Vocabulary logits of hidden states of any leading shape: (..., D) -> (..., V), float32.
    The rows that only pad the vocabulary stay at the padding logit (`real_vocab_size`)."""
    h = self.mlm_norm(transformer.activation_fn(self.head_activation)(self.mlm_transform(hidden)))
    logits = self.encoder.logits(h, jnp.float32) + self.mlm_output_bias
    return transformer.mask_padding_rows(logits, self.config.real_vocab_size)

  def pool(self, hidden):
    """BERT's pooler: tanh(dense(hidden state of [CLS])): (n, T, D) -> (n, D)."""
    return jnp.tanh(self.pooler(hidden[:, 0]))

  def nsp_logits(self, pooled):
    """(n, D) -> (n, 2) float32 next-sentence logits (class 1 = B follows A)."""
    return self.nsp_classifier(pooled).astype(jnp.float32)

  def __call__(self, tokens, segments, positions, train: bool = False):
    """(n, T) tokens and segments, (n, P) positions -> (n, P, V) masked-LM logits at the
    positions and (n, 2) next-sentence logits."""
    hidden = self.encode(tokens, segments, train)
    gathered = masking.gather_positions(hidden, positions)  # (n, T, D) -> (n, P, D)
    return self.mlm_logits(gathered), self.nsp_logits(self.pool(hidden))


# What BERT's inputs and masking need of the tokenizer.
BERT_ROLES = ("cls", "sep", "mask", "pad")


def _masking_options(config: ml_collections.ConfigDict) -> dict:
  t = config.text
  return dict(max_predictions=vocab.max_predictions(config), num_tokens=vocab.real_vocab_size(config),
              mask_rate=t.mask_rate, **masking.special_options(vocab.special_ids(config)))


def nsp_loss_weight(config: ml_collections.ConfigDict) -> float:
  """`config.loss.nsp_weight`; 1 (BERT's plain sum) for configs saved before the key existed."""
  weight = float(config.get("loss", {}).get("nsp_weight", 1.0))
  if weight < 0:
    raise ValueError(f"config.loss.nsp_weight must be >= 0, got {weight}")
  return weight


@register("bert")
def make(config: ml_collections.ConfigDict) -> Objective:
  pad_id = vocab.special_roles(config, BERT_ROLES, "BERT ([CLS] A [SEP] B [SEP], masked with [MASK])")["pad"]
  cfg = common.bert_encoder_config(config)
  model = BertPretraining(cfg, pad_id, head_activation=config.model.get("head_activation", "gelu"))
  mask_options = _masking_options(config)
  nsp_weight = nsp_loss_weight(config)

  def init(key, batch):
    tokens = batch["tokens"]
    positions = jnp.zeros((tokens.shape[0], mask_options["max_predictions"]), jnp.int32)
    return model.init(key, tokens, batch["segments"], positions)["params"], {}

  def loss(params, model_state, batch, keys):
    masked, positions, targets, weights = masking.mask_batch(keys, batch["tokens"], **mask_options)
    # Dropout (BERT-base: 0.1) needs one key for the device's batch; its masks then depend on how
    # the batch is split, unlike the token masks, which come from the per-example keys.
    rngs = {"dropout": jax.random.fold_in(keys[0], 1)} if cfg.dropout else None
    mlm_logits, nsp_logits = model.apply({"params": params}, masked, batch["segments"], positions, train=True,
                                         rngs=rngs)  # (n, P, V), (n, 2)
    labels = batch["nsp_label"]
    mlm = losses.masked_lm_loss(mlm_logits, targets, weights, axis_name=DATA_AXIS)
    nsp = losses.classification_loss(nsp_logits, labels, axis_name=DATA_AXIS)
    metrics = {
        "mlm_loss": mlm,
        "mlm_accuracy": losses.accuracy(mlm_logits, targets, weights=weights, axis_name=DATA_AXIS),
        "nsp_loss": nsp,
        "nsp_accuracy": losses.accuracy(nsp_logits, labels, axis_name=DATA_AXIS),
    }
    return mlm + nsp_weight * nsp, LossAux(model_state=model_state, metrics=metrics)

  def features(params, model_state, batch):
    hidden = model.apply({"params": params}, batch["tokens"], batch.get("segments"), method="encode")
    return model.apply({"params": params}, hidden, method="pool").astype(jnp.float32)  # (B, D)

  def mlm_logits(params, tokens, segments, positions):
    hidden = model.apply({"params": params}, tokens, segments, method="encode")
    return model.apply({"params": params}, masking.gather_positions(hidden, positions), method="mlm_logits")

  def nsp_logits(params, tokens, segments):
    hidden = model.apply({"params": params}, tokens, segments, method="encode")
    return model.apply({"params": params}, model.apply({"params": params}, hidden, method="pool"),
                       method="nsp_logits")

  return Objective(name="bert", family=masked_text.FAMILY, init=init, loss=loss, features=features,
                   # "model" is the encoder alone: it applies to params["encoder"].
                   extras={"model": lambda: transformer.Transformer(cfg), "encoder_config": cfg,
                           "pretraining_model": lambda: model,
                           "mlm_logits": mlm_logits, "nsp_logits": nsp_logits})
