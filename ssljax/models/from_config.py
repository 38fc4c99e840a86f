"""The model a run's `config.model` describes: compute dtype, attention kernel and Transformer
shape, read from the config in one place for every objective that builds a Transformer.

Nothing here knows tokenizers: the vocabulary size and the sequence length come from the caller
(`ssljax.text.vocab` knows them before a tokenizer is trained).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ssljax.models import transformer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
AUTO_DTYPE = "auto"
# The fields of a preset that `config.model.<prefix><field>` may override.
TRANSFORMER_FIELDS = ("num_layers", "num_heads", "embed_dim", "mlp_dim")


def resolve_dtype(name: str, backend: str | None = None) -> str:
  """`config.model.dtype` as a concrete name: "auto" is bfloat16 on GPU and TPU, whose matrix
  units run it at several times float32's rate (parameters, optimizer state and losses stay
  float32 whatever this says), and float32 on CPU, where bfloat16 is emulated and no faster.
  `backend` defaults to JAX's default backend; explicit names pass through, checked."""
  if name == AUTO_DTYPE:
    name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
  if name not in DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES) + [AUTO_DTYPE]}, got {name!r}")
  return name


def compute_dtype(name: str) -> Any:
  return DTYPES[resolve_dtype(name)]


def attention_implementation(name: str | None, dtype: str) -> str | None:
  """`config.model.attention_impl`: "auto" takes cuDNN's fused attention on an NVIDIA GPU with a
  16-bit compute dtype (what it supports) and XLA's everywhere else."""
  if name != "auto":
    return name
  on_gpu = jax.default_backend() == "gpu"
  return "cudnn" if on_gpu and dtype in ("bfloat16", "float16") else None


def set_fields(m: ml_collections.ConfigDict, prefix: str, fields) -> dict:
  """The `<prefix><field>` keys of `config.model` that are set, as {field: value}."""
  return {f: m[prefix + f] for f in fields if m.get(prefix + f) is not None}


# Block options a published checkpoint fixes (`ssljax/convert/`), with the values every bundled
# config leaves them at; a config that lacks a key has the default.
BLOCK_OPTIONS = {"norm_position": "pre", "embed_norm": False, "activation": transformer.DEFAULT_ACTIVATION,
                 "layer_norm_epsilon": transformer.LAYER_NORM_EPSILON}


def block_options(m: ml_collections.ConfigDict, prefix: str = "") -> dict:
  """`<prefix>norm_position`, `embed_norm`, `activation` and `layer_norm_epsilon` of
  `config.model`, each at its default where the config lacks it."""
  return {field: m.get(prefix + field, default) for field, default in BLOCK_OPTIONS.items()}


def transformer_config(m: ml_collections.ConfigDict, *, vocab_size: int, max_len: int, causal: bool,
                       prefix: str = "", real_vocab_size: int = 0) -> transformer.TransformerConfig:
  """The Transformer that `config.model` describes: the preset `<prefix>preset` with any
  `<prefix><field>` set overriding its field (GPT and BERT read `preset`, CLIP's text tower
  `text_preset`). `real_vocab_size`: the real tokens, when `model.mask_padded_vocab` asks for
  the padding rows' logits to be masked."""
  dtype = resolve_dtype(m.dtype)
  return transformer.transformer_config(
      m[prefix + "preset"], vocab_size=vocab_size, causal=causal, max_len=max_len,
      dropout=m.get(prefix + "dropout", 0.0), dtype=dtype,
      attention_impl=attention_implementation(m.attention_impl, dtype), remat=m.remat,
      relative_buckets=m.get(prefix + "relative_buckets", 0),
      qkv_conv_width=m.get(prefix + "qkv_conv_width", 0),
      real_vocab_size=real_vocab_size if m.get(prefix + "mask_padded_vocab", False) else 0,
      **block_options(m, prefix), **set_fields(m, prefix, TRANSFORMER_FIELDS))
