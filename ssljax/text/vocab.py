"""What a config's tokenizer implies before the tokenizer is trained: the embedding rows a model
needs, the ids a tokenizer can produce, and the masked-LM predictions per sequence. The model is
built (and compiled) from these, so they must not wait for the tokenizer."""

from __future__ import annotations

import ml_collections

from ssljax.text import masking
from ssljax.text import tokenizer as tokenizer_lib

TOKENIZER_KINDS = ("sentencepiece", "byte")


def model_vocab_size(config: ml_collections.ConfigDict) -> int:
  """Embedding rows the config's tokenizer needs (a multiple of 128)."""
  t = config.text
  if t.tokenizer == "byte":
    return tokenizer_lib.ByteTokenizer().vocab_size
  if t.tokenizer != "sentencepiece":
    raise ValueError(f"config.text.tokenizer must be one of {TOKENIZER_KINDS}, got {t.tokenizer!r}")
  if t.model_file:
    return tokenizer_lib.SentencePieceTokenizer.from_file(t.model_file).vocab_size
  return tokenizer_lib.padded_vocab_size(t.vocab_size)


def real_vocab_size(config: ml_collections.ConfigDict) -> int:
  """Token ids the config's tokenizer can produce (below the padded embedding rows): the range of
  BERT's random replacement tokens."""
  t = config.text
  if t.tokenizer == "byte":
    return tokenizer_lib.ByteTokenizer().num_tokens
  if t.model_file:
    return tokenizer_lib.SentencePieceTokenizer.from_file(t.model_file).num_tokens
  return t.vocab_size  # SentencePiece makes exactly this many pieces


def max_predictions(config: ml_collections.ConfigDict) -> int:
  """Masked-token predictions per sequence, a fixed shape: `text.max_predictions`, or when that
  is 0, room for 15% of a full sequence (BERT: 20 at length 128)."""
  t = config.text
  return t.max_predictions or masking.default_max_predictions(t.seq_len, t.mask_rate)
