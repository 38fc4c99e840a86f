"""BERT's dynamic masking, on the device, as pure JAX functions.

Devlin et al. 2019, arXiv 1810.04805, Section 3.1 (Task #1, masked LM): "we mask 15% of all
WordPiece tokens in each sequence at random ... we replace the i-th token with (1) the [MASK]
token 80% of the time (2) a random token 10% of the time (3) the unchanged i-th token 10% of the
time", and the model predicts the original token at each chosen position. As in BERT's released
pretraining data, the number of predictions per sequence is round(15% of its tokens), capped by a
fixed `max_predictions`, so every batch has the same shapes: (n, P) positions, targets and 0/1
weights, the unused slots weighted 0.

Only ordinary tokens are chosen: the ids in [0, num_tokens) that are not the tokenizer's special
ids (never [PAD], [EOS], [CLS], [SEP], [MASK], [UNK], wherever a vocabulary puts them); random
replacements are ordinary tokens of the real vocabulary too, never a special token nor a row that
only pads the embedding table.

The masks are drawn from one key per example (the trainer's keys come from the example's index
in the global batch), so they change from step to step (RoBERTa's dynamic masking, Liu et al.
2019, instead of BERT's ten fixed copies), are the same for the same key, and do not depend on
how many devices share the batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from ssljax.text import tokenizer as tokenizer_lib

MASK_RATE = 0.15  # of the ordinary tokens, chosen for prediction
MASK_TOKEN_RATE = 0.8  # of the chosen: replaced by [MASK]
RANDOM_TOKEN_RATE = 0.1  # of the chosen: replaced by a random ordinary token; the rest unchanged


def default_max_predictions(seq_len: int, mask_rate: float = MASK_RATE) -> int:
  """ceil(mask_rate * seq_len) + 1: room for every prediction of a full sequence (BERT used 20 at
  length 128)."""
  return math.ceil(mask_rate * seq_len) + 1


def special_options(special_ids: Mapping[str, int], owner: str = "the tokenizer") -> dict:
  """`mask_example`'s `special_ids` (every special id, sorted) and `mask_id` from a tokenizer's
  role -> id table; a ValueError naming `owner` where it has no [MASK]."""
  mask_id = tokenizer_lib.pick_roles(special_ids, ("mask",), owner=owner, purpose="BERT's masking")["mask"]
  return {"special_ids": tuple(sorted(set(int(i) for i in special_ids.values()))), "mask_id": mask_id}


def _specials_below(special_ids: Sequence[int], num_tokens: int) -> tuple[int, ...]:
  """The distinct special ids inside the real vocabulary, ascending (a pad past it is no token)."""
  return tuple(sorted({int(i) for i in special_ids if 0 <= int(i) < num_tokens}))


def nth_ordinary(index: jax.Array, specials: tuple[int, ...]) -> jax.Array:
  """The index-th id (from 0) that is not in `specials` (ascending): each special id at or below
  the id found so far moves it up by one. With specials 0..5, index i gives i + 6."""
  ids = index
  for special in specials:
    ids = ids + (ids >= special).astype(ids.dtype)
  return ids


def mask_example(key: jax.Array, tokens: jax.Array, *, max_predictions: int, num_tokens: int,
                 special_ids: Sequence[int], mask_id: int, mask_rate: float = MASK_RATE,
                 mask_token_rate: float = MASK_TOKEN_RATE, random_token_rate: float = RANDOM_TOKEN_RATE):
  """Masks one sequence.

  Args:
    key: this example's PRNG key.
    tokens: (T,) int token ids.
    max_predictions: P, predictions per sequence at most (a static shape).
    num_tokens: ids below this are real tokens; random replacements are drawn uniformly from its
      ordinary ids (those not in `special_ids`).
    special_ids: the tokenizer's special ids (a static sequence; `special_options` makes it):
      never chosen, never drawn as a replacement.
    mask_id: the [MASK] token's id.
    mask_rate, mask_token_rate, random_token_rate: BERT's 15%, 80%, 10%.

  Returns:
    masked_tokens (T,) int32: the input with the chosen positions replaced;
    positions (P,) int32: the chosen positions, distinct, in random order (0 in unused slots);
    targets (P,) int32: the original tokens there (0 in unused slots);
    weights (P,) float32: 1 for the min(P, round(mask_rate * ordinary)) used slots, else 0.
  """
  if tokens.ndim != 1:
    raise ValueError(f"mask_example takes one sequence (T,), got shape {tokens.shape}")
  specials = _specials_below(special_ids, num_tokens)
  num_ordinary = num_tokens - len(specials)
  if num_ordinary < 1:
    raise ValueError(f"num_tokens={num_tokens} leaves no ordinary token besides the special ids {specials}")
  length = tokens.shape[0]
  slots = min(max_predictions, length)
  tokens = tokens.astype(jnp.int32)
  choose_key, kind_key, random_key = jax.random.split(key, 3)

  is_special = jnp.any(tokens[:, None] == jnp.asarray(specials or (-1,), jnp.int32), axis=-1)  # (T, S) -> (T,)
  ordinary = (tokens >= 0) & (tokens < num_tokens) & ~is_special  # (T,)
  count = jnp.sum(ordinary)
  # At least one prediction per sequence that has an ordinary token (BERT's max(1, ...)).
  num_predictions = jnp.minimum(slots, jnp.where(count > 0, jnp.maximum(1, jnp.round(mask_rate * count)), 0))
  # A uniformly random order of the ordinary positions: sorting i.i.d. uniform scores gives a
  # uniform permutation, and scores of 2 put every other position after them.
  scores = jnp.where(ordinary, jax.random.uniform(choose_key, (length,)), 2.0)
  chosen = jnp.argsort(scores)[:slots].astype(jnp.int32)  # (T,) -> (P,)
  used = jnp.arange(slots) < num_predictions  # (P,)
  targets = tokens[chosen]

  kind = jax.random.uniform(kind_key, (slots,))
  # An index into the ordinary ids, then the id: randint depends on its range's span only, so
  # with specials 0..5 this is randint(key, (P,), 6, num_tokens) exactly, as before roles existed.
  random_tokens = nth_ordinary(jax.random.randint(random_key, (slots,), 0, num_ordinary, dtype=jnp.int32), specials)
  replacement = jnp.where(kind < mask_token_rate, mask_id,
                          jnp.where(kind < mask_token_rate + random_token_rate, random_tokens, targets))
  # Unused slots scatter to index T, which mode="drop" ignores: they must not touch position 0.
  masked = tokens.at[jnp.where(used, chosen, length)].set(replacement, mode="drop")

  positions = jnp.where(used, chosen, 0)
  targets = jnp.where(used, targets, 0)
  if slots < max_predictions:  # a sequence shorter than P: pad the slots to the static P
    pad = (0, max_predictions - slots)
    positions, targets, used = jnp.pad(positions, pad), jnp.pad(targets, pad), jnp.pad(used, pad)
  return masked, positions, targets, used.astype(jnp.float32)


def mask_batch(keys: jax.Array, tokens: jax.Array, *, max_predictions: int, num_tokens: int,
               special_ids: Sequence[int], mask_id: int, mask_rate: float = MASK_RATE,
               mask_token_rate: float = MASK_TOKEN_RATE, random_token_rate: float = RANDOM_TOKEN_RATE):
  """`mask_example` for every row: keys (n,), tokens (n, T) -> masked_tokens (n, T),
  positions (n, P) int32, targets (n, P) int32, weights (n, P) float32."""
  if keys.shape[:1] != tokens.shape[:1] or tokens.ndim != 2:
    raise ValueError(f"mask_batch needs one key per row of (n, T) tokens, got keys {keys.shape} and "
                     f"tokens {tokens.shape}")
  one = functools.partial(mask_example, max_predictions=max_predictions, num_tokens=num_tokens,
                          special_ids=tuple(special_ids), mask_id=mask_id, mask_rate=mask_rate,
                          mask_token_rate=mask_token_rate, random_token_rate=random_token_rate)
  return jax.vmap(one)(keys, tokens)


def gather_positions(hidden: jax.Array, positions: jax.Array) -> jax.Array:
  """The hidden states at the predicted positions: (n, T, D), (n, P) -> (n, P, D). Projecting
  only these onto the vocabulary costs (n, P, V) instead of (n, T, V)."""
  return jnp.take_along_axis(hidden, positions[..., None], axis=1)
