"""What a config's tokenizer implies before the tokenizer is trained (or loaded): the embedding
rows a model needs, the ids a tokenizer can produce, its special ids by role, and the masked-LM
predictions per sequence. The model is built (and compiled) from these, so they must not wait
for the tokenizer.

A Hugging Face tokenizer (`text.tokenizer = "huggingface"`) is described by the config alone when
`text.special_tokens` is set (role -> id, written by whatever imported the checkpoint, with
`text.vocab_size` its real token count), so that a run's config.json needs no file; otherwise its
tokenizer.json at `text.model_file` is read.
"""

from __future__ import annotations

import functools
import os

import ml_collections

from ssljax.text import masking
from ssljax.text import tokenizer as tokenizer_lib

TOKENIZER_KINDS = ("sentencepiece", "byte", "huggingface")
BUNDLED_KINDS = ("sentencepiece", "byte")  # the fixed special ids PAD..UNK = 0..5


def _kind(config: ml_collections.ConfigDict) -> str:
  kind = config.text.tokenizer
  if kind not in TOKENIZER_KINDS:
    raise ValueError(f"config.text.tokenizer must be one of {TOKENIZER_KINDS}, got {kind!r}")
  return kind


def _given_special_tokens(config: ml_collections.ConfigDict) -> dict[str, int]:
  """config.text.special_tokens as a dict ({} when unset, or in a config saved before the key)."""
  given = config.text.get("special_tokens")
  return dict(given.to_dict() if hasattr(given, "to_dict") else given or {})


@functools.lru_cache(maxsize=8)
def _huggingface_file(path: str, stamps: tuple) -> tokenizer_lib.HuggingFaceTokenizer:
  del stamps  # part of the cache key only: files rewritten in place are read again
  return tokenizer_lib.HuggingFaceTokenizer.from_directory(path)


def _stamps(path: str) -> tuple:
  """(mtime, size) of the files that make a Hugging Face tokenizer (None where absent)."""
  file = os.path.join(path, tokenizer_lib.HF_TOKENIZER_FILE) if os.path.isdir(path) else path
  folder = os.path.dirname(file)
  files = (file, os.path.join(folder, tokenizer_lib.HF_CONFIG_FILE),
           os.path.join(folder, tokenizer_lib.HF_SPECIAL_TOKENS_MAP))
  return tuple((os.stat(f).st_mtime_ns, os.stat(f).st_size) if os.path.isfile(f) else None for f in files)


def huggingface_tokenizer(config: ml_collections.ConfigDict) -> tokenizer_lib.HuggingFaceTokenizer:
  """The tokenizer at `text.model_file` (a Hugging Face directory or tokenizer.json), read once
  however many sizes and ids are asked of it."""
  path = config.text.model_file
  if not path:
    raise ValueError("config.text.model_file must name a Hugging Face tokenizer.json (or its directory) for "
                     "text.tokenizer='huggingface', unless text.special_tokens and text.vocab_size describe it")
  return _huggingface_file(str(path), _stamps(str(path)))


def _described(config: ml_collections.ConfigDict) -> bool:
  """Whether a huggingface config gives its ids and size itself (text.special_tokens set)."""
  return bool(_given_special_tokens(config))


def special_ids(config: ml_collections.ConfigDict) -> dict[str, int]:
  """{role: id} of the config's tokenizer (roles: `tokenizer.ROLES`): the bundled kinds' fixed
  table, or a Hugging Face tokenizer's `text.special_tokens` (pad = `text.vocab_size` where it
  names none), else its file's."""
  if _kind(config) in BUNDLED_KINDS:
    return dict(tokenizer_lib.BUNDLED_SPECIAL_IDS)
  if _described(config):
    given = tokenizer_lib.checked_roles(_given_special_tokens(config), "config.text.special_tokens")
    return tokenizer_lib.with_pad(given, config.text.vocab_size)
  return huggingface_tokenizer(config).special_ids


def special_roles(config: ml_collections.ConfigDict, roles, purpose: str) -> dict[str, int]:
  """{role: id} of `roles`; one ValueError naming the config's tokenizer, every role it lacks
  and `purpose` (what needs them, e.g. "BERT's masked-LM pretraining")."""
  return tokenizer_lib.pick_roles(special_ids(config), roles, owner=f"the {config.text.tokenizer} tokenizer of "
                                  "config.text", purpose=purpose)


def model_vocab_size(config: ml_collections.ConfigDict) -> int:
  """Embedding rows the config's tokenizer needs (a multiple of 128)."""
  t = config.text
  kind = _kind(config)
  if kind == "byte":
    return tokenizer_lib.ByteTokenizer().vocab_size
  if kind == "huggingface":
    if _described(config):
      return tokenizer_lib.rows_for(t.vocab_size, special_ids(config))
    return huggingface_tokenizer(config).vocab_size
  if t.model_file:
    return tokenizer_lib.SentencePieceTokenizer.from_file(t.model_file).vocab_size
  return tokenizer_lib.padded_vocab_size(t.vocab_size)


def real_vocab_size(config: ml_collections.ConfigDict) -> int:
  """Token ids the config's tokenizer can produce (below the padded embedding rows): the range of
  BERT's random replacement tokens."""
  t = config.text
  kind = _kind(config)
  if kind == "byte":
    return tokenizer_lib.ByteTokenizer().num_tokens
  if kind == "huggingface":
    return t.vocab_size if _described(config) else huggingface_tokenizer(config).num_tokens
  if t.model_file:
    return tokenizer_lib.SentencePieceTokenizer.from_file(t.model_file).num_tokens
  return t.vocab_size  # SentencePiece makes exactly this many pieces


def max_predictions(config: ml_collections.ConfigDict) -> int:
  """Masked-token predictions per sequence, a fixed shape: `text.max_predictions`, or when that
  is 0, room for 15% of a full sequence (BERT: 20 at length 128)."""
  t = config.text
  return t.max_predictions or masking.default_max_predictions(t.seq_len, t.mask_rate)
