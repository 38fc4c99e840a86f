"""What the image-text evaluators (zero_shot, retrieval, attribute_probe) share: the splits they
report on and the normalised image and caption embeddings of a split's
first records (`extras["embed_image"]`, `extras["embed_text"]` of the objective), computed once
per round for the evaluators that read the same number of records.

An image-text dataset may hold a split of combinations never trained on (`data.heldout_split`,
shapes' "test_heldout"); evaluated on the test split, each evaluator reports it beside the test
split, so that generalisation to unseen combinations reads next to the seen ones.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import ml_collections
import numpy as np

from ssljax import data
from ssljax.families import image_text
from ssljax.text import tokenizer as tokenizer_lib


def evaluation_splits(config: ml_collections.ConfigDict, split: str) -> list[str]:
  """`split`, and the held-out split too when `split` is the test split."""
  heldout = config.data.get("heldout_split")
  return [split, heldout] if heldout and split == config.data.test_split else [split]


@functools.cache
def _jit(fn: Callable) -> Callable:
  return jax.jit(fn)


def split_embeddings(objective, params, model_state, config: ml_collections.ConfigDict,
                     tokenizer: tokenizer_lib.Tokenizer, split: str, limit: int | None = None):
  """Normalised image and caption embeddings (N, E) of a split's first `limit` records (default:
  all), and the records' other fields (labels, scenes), streamed in batches of `eval.batch_size`
  (the last one padded, so each tower compiles once)."""
  source = data.open_split(config.data, split)
  count = len(source) if limit is None else min(limit, len(source))
  embed_image, embed_text = _jit(objective.extras["embed_image"]), _jit(objective.extras["embed_text"])
  transform = image_text.record_fn(config, tokenizer)
  batch_size = config.eval.batch_size
  images, texts, fields = [], [], []
  for start in range(0, count, batch_size):
    records = source.__getitems__(range(start, min(start + batch_size, count)))
    examples = [transform(r) for r in records]
    real = len(examples)
    image_batch = _pad(np.stack([e["image"] for e in examples]), batch_size)
    token_batch = _pad(np.stack([e["tokens"] for e in examples]), batch_size)
    images.append(np.asarray(embed_image(params, model_state, image_batch))[:real])
    texts.append(np.asarray(embed_text(params, model_state, token_batch))[:real])
    fields += [{k: v for k, v in r.items() if k != "image"} for r in records]
  return np.concatenate(images), np.concatenate(texts), fields


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
  """(n, ...) -> (rows, ...) with zero rows, so every batch has one shape (one compilation)."""
  return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])


def embeddings(context, params, model_state, split: str, limit: int):
  """`split_embeddings` of the split's first `limit` records under the round's parameters,
  computed once per round."""
  return context.shared(("image-text embeddings", split, limit), functools.partial(
      split_embeddings, context.objective, params, model_state, context.config, context.tokenizer(), split, limit))


def prompt_embedder(context, params, model_state) -> Callable[[list[str]], np.ndarray]:
  """prompts -> (n, E) normalised text embeddings under the round's parameters, each prompt
  tokenised as a caption is (cut to `text.seq_len` - 1, then [EOS], then [PAD]s)."""
  embed_text = _jit(context.objective.extras["embed_text"])
  tokenizer, seq_len = context.tokenizer(), context.config.text.seq_len
  return lambda prompts: np.asarray(embed_text(params, model_state, image_text.tokenize(tokenizer, prompts, seq_len)))
