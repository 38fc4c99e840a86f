"""Autoregressive sampling and sequence scoring for causal `Transformer`s (GPT-2 style).

`generate` runs right-padded prompts of different lengths through one `prefill`, then
samples one token per step with `decode_step` and the KV cache (Radford et al. 2019 sample
GPT-2 the same way, with top-k). The whole generation is ONE jitted function: the prefill,
then a `lax.while_loop` around the decode step that stops as soon as every row is done, so
the decode step is traced and compiled once and no step waits on the host. Only the model,
the batch size, the padded prompt length (bucketed to a power of two) and `greedy` are
static; temperature, top-k, top-p, ids and `max_new_tokens` are traced, so changing them
does not recompile. `trace_counts` records each tracing, for tests and benchmarks.

`sample_logits` implements temperature, top-k (Fan et al. 2018, arXiv 1805.04833) and
nucleus/top-p sampling (Holtzman et al. 2020, arXiv 1904.09751) as one pure function.

`sequence_log_probs` scores given sequences (few-shot multiple choice, bits per byte).
"""

from __future__ import annotations

import collections
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssljax.models.transformer import KVCache, Transformer

Array = jax.Array

# How many times each jitted program below has been traced (≈ compiled) in this process.
trace_counts: collections.Counter[str] = collections.Counter()

# Prompts are right-padded to a power of two of at least this, so prompts of similar
# lengths share one compiled program.
MIN_PROMPT_BUCKET = 16


def sample_logits(key: Array, logits: Array, temperature: float | Array = 1.0,
                  top_k: int | Array | None = None, top_p: float | Array | None = None) -> Array:
  """Draws one token id per row of `logits` (..., V) -> (...) int32.

  Order of operations as in common practice: divide by `temperature`, keep the `top_k`
  largest, then keep the smallest set of those whose probability (renormalised) reaches
  `top_p`; the most likely token always survives. `temperature` <= 0 means argmax.
  `top_k` and `top_p` may be traced values; None switches a filter off. Ties keep the lower
  token id first, so top_k keeps exactly k tokens. The same key gives the same draw.
  """
  logits = jnp.asarray(logits).astype(jnp.float32)
  temperature = jnp.asarray(temperature, jnp.float32)
  scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
  if top_k is None and top_p is None:
    sampled = jax.random.categorical(key, scaled, axis=-1)
  else:
    # Work in sorted order (most likely first), where both filters are prefixes: rank < k,
    # and "probability mass before this token < p". One sort serves both.
    order = jnp.argsort(-scaled, axis=-1)  # stable: ties keep ascending ids
    sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
    rank = jnp.arange(logits.shape[-1])
    keep = jnp.ones(logits.shape[-1], bool)
    if top_k is not None:
      keep = rank < jnp.maximum(jnp.asarray(top_k), 1)  # never an empty set
      sorted_logits = jnp.where(keep, sorted_logits, -jnp.inf)
    if top_p is not None:
      probs = jax.nn.softmax(sorted_logits, axis=-1)
      mass_before = jnp.cumsum(probs, axis=-1) - probs
      keep = keep & ((mass_before < jnp.asarray(top_p, jnp.float32)) | (rank == 0))
      sorted_logits = jnp.where(keep, sorted_logits, -jnp.inf)
    choice = jax.random.categorical(key, sorted_logits, axis=-1)  # index into sorted order
    sampled = jnp.take_along_axis(order, choice[..., None], axis=-1)[..., 0]
  return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


def _as_variables(params) -> dict:
  """Accepts either the "params" tree or the full variables dict {"params": ...}."""
  return params if "params" in params else {"params": params}


class _DecodeState(NamedTuple):
  step: Array  # tokens sampled so far (the next column of `new_tokens`)
  last_token: Array  # (B,) the token sampled last, to feed into the model next
  cache: KVCache
  new_tokens: Array  # (B, max_len) generated ids, pad after each row's end
  num_new: Array  # (B,) generated tokens kept per row
  done: Array  # (B,) row finished (eos, its budget or the context is used up)


@functools.partial(jax.jit, static_argnames=("model", "greedy"))
def _generate_padded(model: Transformer, variables, prompts, lengths, key, max_new_tokens,
                     temperature, top_k, top_p, eos_id, pad_id, *, greedy: bool):
  """The jitted body of `generate` on a padded (B, T) prompt batch."""
  trace_counts["generate"] += 1
  max_len = model.config.max_len
  batch = prompts.shape[0]
  # New tokens allowed per row: the request, and what is left of the context window.
  budget = jnp.minimum(max_new_tokens, max_len - lengths)

  def pick(step, logits):
    if greedy:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return sample_logits(jax.random.fold_in(key, step), logits, temperature, top_k, top_p)

  def record(state: _DecodeState, token) -> _DecodeState:
    is_eos = token == eos_id
    kept = ~state.done & ~is_eos  # eos ends a row and is not part of its output
    num_new = state.num_new + kept
    return state._replace(
        step=state.step + 1,
        last_token=token,
        new_tokens=state.new_tokens.at[:, state.step].set(jnp.where(kept, token, pad_id)),
        num_new=num_new,
        done=state.done | is_eos | (num_new >= budget),
    )

  def decode(state: _DecodeState) -> _DecodeState:
    trace_counts["decode_step"] += 1
    # The last sampled token sits right after the prompt and the tokens before it. Finished
    # rows keep decoding (the batch moves together); clipping keeps their writes in range.
    positions = jnp.minimum(lengths + state.step - 1, max_len - 1)
    logits, cache = model.apply(variables, state.cache, state.last_token, positions,
                                method="decode_step")
    return record(state._replace(cache=cache), pick(state.step, logits))

  trace_counts["prefill"] += 1
  logits, cache = model.apply(variables, prompts, lengths, method="prefill")
  state = _DecodeState(
      step=jnp.zeros((), jnp.int32),
      last_token=jnp.zeros((batch,), jnp.int32),
      cache=cache,
      new_tokens=jnp.full((batch, max_len), pad_id, jnp.int32),
      num_new=jnp.zeros((batch,), jnp.int32),
      done=budget <= 0,
  )
  state = record(state, pick(0, logits))
  state = jax.lax.while_loop(lambda s: ~jnp.all(s.done), decode, state)
  return state.new_tokens, state.num_new


def _bucket(length: int, max_len: int) -> int:
  """Smallest power of two >= length (at least MIN_PROMPT_BUCKET), capped at max_len."""
  return min(max_len, max(MIN_PROMPT_BUCKET, 1 << (length - 1).bit_length()))


def generate(model: Transformer, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             key: Array, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, eos_id: int = 1, pad_id: int = 0) -> list[list[int]]:
  """Continues each prompt; returns the new tokens per prompt (not the prompt).

  A row stops at `eos_id` (which is NOT included in its output), after `max_new_tokens`,
  or when prompt + output fill the context (`model.config.max_len`), whichever is first.

  Args:
    model: a causal `Transformer`.
    params: its "params" tree (or the full variables dict).
    prompts: token ids, one non-empty list per row; lengths may differ.
    max_new_tokens: most tokens to generate per row.
    key: PRNG key; the same key (and inputs) gives the same tokens.
    temperature, top_k, top_p: see `sample_logits`. Ignored when `greedy`.
    greedy: take the argmax at every step.
    eos_id: end-of-sequence id. pad_id: fills the prompt padding.

  Returns:
    One list of new token ids per prompt.
  """
  if not model.config.causal:
    raise ValueError("generate needs a causal (decoder) Transformer")
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("generate needs at least one prompt and every prompt non-empty")
  max_len = model.config.max_len
  lengths = [len(p) for p in prompts]
  if max(lengths) > max_len:
    raise ValueError(f"a prompt of {max(lengths)} tokens exceeds the context of {max_len}")
  if top_k is not None and top_k < 1:
    raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
  if top_p is not None and not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if max_new_tokens <= 0:
    return [[] for _ in prompts]

  padded = np.full((len(prompts), _bucket(max(lengths), max_len)), pad_id, np.int32)
  for row, prompt in enumerate(prompts):
    padded[row, :len(prompt)] = prompt
  new_tokens, num_new = _generate_padded(
      model, _as_variables(params), jnp.asarray(padded), jnp.asarray(lengths, jnp.int32), key,
      jnp.int32(max_new_tokens), jnp.float32(temperature),
      None if top_k is None else jnp.int32(top_k), None if top_p is None else jnp.float32(top_p),
      jnp.int32(eos_id), jnp.int32(pad_id), greedy=greedy)
  new_tokens, num_new = jax.device_get((new_tokens, num_new))
  return [row[:n].tolist() for row, n in zip(new_tokens, num_new)]


@functools.partial(jax.jit, static_argnames=("model",))
def _sequence_log_probs(model: Transformer, variables, tokens):
  trace_counts["sequence_log_probs"] += 1
  hidden = model.apply(variables, tokens)
  # Position t predicts token t + 1: (B, T-1, D) -> (B, T-1, V), float32 for the softmax.
  logits = model.apply(variables, hidden[:, :-1], jnp.float32, method="logits")
  targets = tokens[:, 1:]
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  log_probs = target_logits - jax.nn.logsumexp(logits, axis=-1)
  # The first token has no context: log p = 0 by convention. (B, T-1) -> (B, T)
  return jnp.pad(log_probs, ((0, 0), (1, 0)))


def sequence_log_probs(model: Transformer, params, tokens) -> Array:
  """Per-token log-likelihoods: out[:, t] = log p(tokens[:, t] | tokens[:, :t]), out[:, 0] = 0.

  Args:
    model: a causal `Transformer`.
    params: its "params" tree (or the full variables dict).
    tokens: (B, T) int ids, T <= max_len. Right padding is harmless (causal attention):
      mask the padded positions out of any sum.

  Returns:
    (B, T) float32 log-probabilities (natural log).
  """
  if not model.config.causal:
    raise ValueError("sequence_log_probs needs a causal (decoder) Transformer")
  tokens = jnp.asarray(tokens, jnp.int32)
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be (batch, length), got shape {tokens.shape}")
  return _sequence_log_probs(model, _as_variables(params), tokens)
