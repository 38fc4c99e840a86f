"""GPT: next-token prediction with a causal Transformer (Radford et al. 2018, 2019).

  loss = - sum_{b,t} m[b,t+1] log p(x[b,t+1] | x[b,<=t]) / sum_{b,t} m[b,t+1]

over every non-padding target of the packed windows (documents joined with [EOS], so the
model also learns where a document ends), as a global mean over the devices
(`losses.next_token_loss(..., axis_name=DATA_AXIS)`). The model is `models.Transformer` with
`causal=True`: pre-LayerNorm blocks, learned positions, tied input and output embeddings.

`features` (for probes) is the mean of the final hidden states over a sequence's real tokens.
Its evaluators (`ssljax.evaluators`: language_model, few_shot, samples) read two extras:
"log_probs" (params, model_state, tokens (B, T)) -> (B, T) log p(token t | tokens before it), for
perplexity, bits per byte and few-shot scoring; and "generate" (params, model_state, prompts,
**sampling) -> new tokens per prompt, with a KV cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import losses, models
from ssljax.families import text
from ssljax.interface import DATA_AXIS, LossAux, Objective, register
from ssljax.models import from_config, generation, transformer
from ssljax.objectives import common
from ssljax.text import vocab


def transformer_config(config: ml_collections.ConfigDict, *, causal: bool) -> transformer.TransformerConfig:
  """The Transformer of a language run: `config.model`'s preset and fields, the tokenizer's
  embedding rows and `model.max_len` positions (default: `config.text.seq_len`)."""
  return from_config.transformer_config(config.model, vocab_size=vocab.model_vocab_size(config),
                                        max_len=common.max_positions(config), causal=causal,
                                        real_vocab_size=vocab.real_vocab_size(config))


@register("gpt")
def make(config: ml_collections.ConfigDict) -> Objective:
  ids = vocab.special_roles(config, ("eos", "pad"), "GPT (documents end with [EOS])")
  pad_id, eos_id = ids["pad"], ids["eos"]
  model = models.Transformer(transformer_config(config, causal=True))

  def init(key, batch):
    return model.init(key, batch["tokens"])["params"], {}

  def loss(params, model_state, batch, keys):
    tokens = batch["tokens"]  # (n, T) packed windows, [PAD] only at the end of the data
    # Dropout (off by default) needs one key for the device's batch; its masks then depend on
    # how the batch is split, unlike every other random draw of the step.
    rngs = {"dropout": jax.random.fold_in(keys[0], 1)} if model.config.dropout else None
    hidden = model.apply({"params": params}, tokens, train=True, rngs=rngs)  # (n, T, D)
    logits = model.apply({"params": params}, hidden, method="logits")  # (n, T, V)
    real = (tokens != pad_id).astype(jnp.float32)
    value = losses.next_token_loss(logits, tokens, real, axis_name=DATA_AXIS)
    # This device's share (the step averages the devices' metrics); by maxima, not an argmax.
    accuracy = losses.accuracy(logits[:, :-1], tokens[:, 1:], weights=real[:, 1:])
    return value, LossAux(model_state=model_state, metrics={"next_token_accuracy": accuracy})

  def features(params, model_state, batch):
    tokens = batch["tokens"]
    real = (tokens != pad_id)[..., None]
    hidden = model.apply({"params": params}, tokens, padding_mask=None).astype(jnp.float32)
    return jnp.sum(hidden * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1)  # (B, T, D) -> (B, D)

  def log_probs(params, model_state, tokens):
    return generation.sequence_log_probs(model, params, tokens)

  def generate(params, model_state, prompts, **sampling):
    return generation.generate(model, params, prompts, eos_id=eos_id, pad_id=pad_id, **sampling)

  return Objective(name="gpt", family=text.FAMILY, init=init, loss=loss, features=features,
                   extras={"log_probs": log_probs, "generate": generate, "model": lambda: model})
