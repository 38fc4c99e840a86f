"""Softmax cross-entropies with integer labels: pretext classification, masked LM, next token.

All take logits of any float dtype and compute the log-softmax in float32. With `axis_name` the
(weighted) mean is over the global batch: the devices psum both the weighted sum and the total
weight, so a device with many masked tokens counts for more, exactly as on one device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssljax.losses import _common
from ssljax.losses._common import AxisName

Array = jax.Array


def _check_logits_labels(fn: str, logits, labels) -> tuple[Array, Array]:
  logits = _common.as_array(fn, "logits", logits)
  labels = _common.as_array(fn, "labels", labels)
  if logits.ndim < 2 or not jnp.issubdtype(logits.dtype, jnp.floating) or logits.shape[-1] == 0:
    raise ValueError(f"{fn}: logits must be a floating array of shape (..., num_classes), got "
                     f"{_common.describe(logits)}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integer class ids, got {_common.describe(labels)}")
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"{fn}: labels must have shape logits.shape[:-1] = "
                     f"{tuple(logits.shape[:-1])}, got labels {tuple(labels.shape)} for logits "
                     f"{tuple(logits.shape)}")
  return logits.astype(jnp.float32), labels


def _token_nll(logits: Array, labels: Array) -> Array:
  """-log softmax(logits)[label] per position: (..., V), (...) -> (...).

  Labels are clipped into [0, V) so that ignored positions may hold any id (-100, padding).
  """
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  safe_labels = jnp.clip(labels, 0, logits.shape[-1] - 1)
  return -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]


def _weighted_mean(values: Array, weights: Array, axis_name: AxisName | None) -> Array:
  """sum(w * v) / sum(w) over the global batch; 0 when every weight is 0."""
  total = _common.global_sum(jnp.sum(weights), axis_name)
  weighted = _common.global_sum(jnp.sum(weights * values), axis_name)
  # where() on a safe denominator, so an all-zero mask gives 0 and a finite gradient.
  return jnp.where(total > 0, weighted / jnp.where(total > 0, total, 1.0), 0.0)


def masked_lm_loss(logits: Array, labels: Array, weights: Array, *,
                   axis_name: AxisName | None = None) -> Array:
  """Weighted mean cross-entropy over masked positions (BERT's masked-LM loss).

  Devlin et al. 2018, "BERT", arXiv:1810.04805, Section 3.1 (Task #1):

      loss = sum_p w_p * (-log softmax(logits_p)[labels_p]) / sum_p w_p

  Args:
    logits: (..., V) predictions, e.g. (B, T, V) or gathered (B, M, V) at masked positions.
    labels: (...) integer token ids; any id at a weight-0 position is ignored.
    weights: (...) 1.0 at the positions that count, 0.0 elsewhere (floats allowed).
    axis_name: mesh axis (or tuple of axes) for a global weighted mean, or None.

  Returns:
    Scalar float32 loss; 0 when all weights are 0.
  """
  fn = "masked_lm_loss"
  logits, labels = _check_logits_labels(fn, logits, labels)
  weights = _common.as_array(fn, "weights", weights)
  if weights.shape != labels.shape:
    raise ValueError(f"{fn}: weights must have the shape of labels {tuple(labels.shape)}, got "
                     f"{_common.describe(weights)}")
  return _weighted_mean(_token_nll(logits, labels), weights.astype(jnp.float32), axis_name)


def next_token_loss(logits: Array, tokens: Array, mask: Array | None = None, *,
                    axis_name: AxisName | None = None) -> Array:
  """Causal language-modelling loss: position t predicts token t + 1 (GPT).

  Radford et al. 2018/2019 (GPT, GPT-2), the standard LM objective:

      loss = sum_{b, t < T-1} m[b, t+1] * (-log softmax(logits[b, t])[tokens[b, t+1]])
             / sum_{b, t < T-1} m[b, t+1]

  The shift happens here: logits[:, :-1] are scored against tokens[:, 1:].

  Args:
    logits: (B, T, V) model outputs for the input `tokens`.
    tokens: (B, T) integer input tokens.
    mask: optional (B, T) weights of the *target* positions (same shape as tokens; mask[:, 0]
      is never used since token 0 is never a target), e.g. 0 at padding. None counts all.
    axis_name: mesh axis (or tuple of axes) for a global mean over the counted tokens.

  Returns:
    Scalar float32 loss.
  """
  fn = "next_token_loss"
  logits = _common.as_array(fn, "logits", logits)
  tokens = _common.as_array(fn, "tokens", tokens)
  if logits.ndim != 3 or tokens.shape != logits.shape[:2] or logits.shape[1] < 2:
    raise ValueError(f"{fn}: logits must be (B, T, V) and tokens (B, T) with T >= 2, got "
                     f"logits {_common.describe(logits)} and tokens {_common.describe(tokens)}")
  if mask is None:
    mask = jnp.ones(tokens.shape, jnp.float32)
  mask = _common.as_array(fn, "mask", mask)
  if mask.shape != tokens.shape:
    raise ValueError(f"{fn}: mask must have the shape of tokens {tuple(tokens.shape)}, got "
                     f"{_common.describe(mask)}")
  logits, targets = _check_logits_labels(fn, logits[:, :-1], tokens[:, 1:])
  nll = _token_nll(logits, targets)  # (B, T-1)
  return _weighted_mean(nll, mask[:, 1:].astype(jnp.float32), axis_name)


def classification_loss(logits: Array, labels: Array, *, weights: Array | None = None,
                        axis_name: AxisName | None = None) -> Array:
  """Mean softmax cross-entropy with integer labels (next-sentence, rotation, patch position,
  a fine-tuned classifier).

      loss = -1/N sum_i log softmax(logits_i)[labels_i]
      (with weights: - sum_i w_i log softmax(logits_i)[labels_i] / sum_i w_i)

  Used by RotNet (Gidaris et al. 2018, arXiv:1803.07728), relative patch placement
  (Doersch et al. 2015, arXiv:1505.05192) and BERT's next-sentence prediction.

  Args:
    logits: (..., C) class scores.
    labels: (...) integer classes in [0, C).
    weights: optional (...) weights of the rows (0 for padding rows); None counts all.
    axis_name: mesh axis (or tuple of axes) for a global mean, or None.

  Returns:
    Scalar float32 loss; 0 when every weight is 0.
  """
  fn = "classification_loss"
  logits, labels = _check_logits_labels(fn, logits, labels)
  weights = _row_weights(fn, weights, labels.shape)
  return _weighted_mean(_token_nll(logits, labels), weights, axis_name)


def _row_weights(fn: str, weights, shape) -> Array:
  """`weights` as float32 of `shape`, checked; ones when None."""
  if weights is None:
    return jnp.ones(shape, jnp.float32)
  weights = _common.as_array(fn, "weights", weights)
  if weights.shape != tuple(shape):
    raise ValueError(f"{fn}: weights must have shape {tuple(shape)}, got {_common.describe(weights)}")
  return weights.astype(jnp.float32)


def tagging_loss(logits: Array, tags: Array, weights: Array | None = None, *,
                 axis_name: AxisName | None = None) -> Array:
  """Token tagging (BERT's named entities, arXiv:1810.04805, section 5.3): mean cross-entropy
  over the labelled tokens of the counted rows.

      loss = sum_{b,t: tags[b,t] >= 0} w_b (-log softmax(logits[b,t])[tags[b,t]])
             / sum_{b,t: tags[b,t] >= 0} w_b

  Every labelled token counts once, so a long sentence weighs more than a short one (token-level
  training), and across devices the mean is over the global batch's labelled tokens.

  Args:
    logits: (B, T, K) tag scores.
    tags: (B, T) integer tags, negative where a token carries no label (special tokens,
      padding, a word's later sub-tokens).
    weights: optional (B,) row weights (0 for padding rows); None counts every row.
    axis_name: mesh axis (or tuple of axes) for a global mean, or None.

  Returns:
    Scalar float32 loss; 0 when no token is labelled.
  """
  fn = "tagging_loss"
  logits, tags = _check_logits_labels(fn, logits, tags)
  if logits.ndim != 3:
    raise ValueError(f"{fn}: logits must be (B, T, K), got {_common.describe(logits)}")
  rows = _row_weights(fn, weights, tags.shape[:1])
  labelled = (tags >= 0).astype(jnp.float32) * rows[:, None]  # (B, T)
  return _weighted_mean(_token_nll(logits, tags), labelled, axis_name)


# A masked logit: far below any real one but finite, so that 0 * masked stays 0.
_MASKED_LOGIT = -1e9


def span_loss(start_logits: Array, end_logits: Array, starts: Array, ends: Array, context_mask: Array,
              weights: Array | None = None, *, axis_name: AxisName | None = None) -> Array:
  """Span extraction (SQuAD; BERT, arXiv:1810.04805, section 4.2): the mean over rows of
  (CE(start) + CE(end)) / 2, each a softmax over the context positions only.

      loss = sum_b w_b (-log p_start[b, starts_b] - log p_end[b, ends_b]) / 2 / sum_b w_b,
      p_start[b] = softmax(start_logits[b] restricted to context_mask[b])

  Args:
    start_logits, end_logits: (B, T) scores of each position as the answer's first (last) token.
    starts, ends: (B,) integer positions of the answer's first and last token (in the context).
    context_mask: (B, T) bool, True at the passage's positions.
    weights: optional (B,) row weights (0 for padding rows); None counts every row.
    axis_name: mesh axis (or tuple of axes) for a global mean, or None.

  Returns:
    Scalar float32 loss; 0 when every weight is 0.
  """
  fn = "span_loss"
  start_logits = _common.as_array(fn, "start_logits", start_logits)
  end_logits = _common.as_array(fn, "end_logits", end_logits)
  context_mask = _common.as_array(fn, "context_mask", context_mask)
  if start_logits.ndim != 2 or end_logits.shape != start_logits.shape or context_mask.shape != start_logits.shape:
    raise ValueError(f"{fn}: start_logits, end_logits and context_mask must share one (B, T) shape, got "
                     f"{_common.describe(start_logits)}, {_common.describe(end_logits)}, "
                     f"{_common.describe(context_mask)}")
  rows = _row_weights(fn, weights, start_logits.shape[:1])

  def context_nll(logits, positions):  # (B, T), (B,) -> (B,)
    _, positions = _check_logits_labels(fn, logits, positions)
    return _token_nll(jnp.where(context_mask, logits.astype(jnp.float32), _MASKED_LOGIT), positions)

  per_row = (context_nll(start_logits, starts) + context_nll(end_logits, ends)) / 2
  return _weighted_mean(per_row, rows, axis_name)


def _is_first_argmax(logits: Array, labels: Array) -> Array:
  """argmax(logits, -1) == labels, by two masked maxima rather than an argmax: the label's logit
  is above every earlier class's and at least every later one's. XLA:CPU ran argmax's (value,
  index) reduction over (48, 65, 8,192) masked-LM logits in 39 ms of a 680 ms BERT step; a
  plain max over them took 2 ms in isolation (docs/performance.md)."""
  safe_labels = jnp.clip(labels, 0, logits.shape[-1] - 1)[..., None]  # (..., 1)
  label_logit = jnp.take_along_axis(logits, safe_labels, axis=-1)[..., 0]
  classes = jnp.arange(logits.shape[-1])
  earlier = jnp.max(jnp.where(classes < safe_labels, logits, -jnp.inf), axis=-1)
  from_label_on = jnp.max(jnp.where(classes >= safe_labels, logits, -jnp.inf), axis=-1)
  return (label_logit > earlier) & (label_logit >= from_label_on) & (labels == safe_labels[..., 0])


def accuracy(logits: Array, labels: Array, *, weights: Array | None = None,
             axis_name: AxisName | None = None) -> Array:
  """Fraction of rows whose argmax is the label: mean(argmax(logits, -1) == labels), or with
  weights sum(w * [argmax == label]) / sum(w) (masked-LM accuracy over the predicted slots).
  On ties the first of the tied classes is the argmax, as in jnp.argmax.

  Args:
    logits: (..., C) class scores.
    labels: (...) integer classes.
    weights: optional (...) weights of the rows (0 for rows that do not count); None counts all.
    axis_name: mesh axis (or tuple of axes) for a global mean, or None.

  Returns:
    Scalar float32 in [0, 1] (no gradient); 0 when every weight is 0.
  """
  logits, labels = _check_logits_labels("accuracy", logits, labels)
  if weights is None:
    weights = jnp.ones(labels.shape)
  weights = _common.as_array("accuracy", "weights", weights)
  if weights.shape != labels.shape:
    raise ValueError(f"accuracy: weights must have the shape of labels {tuple(labels.shape)}, got "
                     f"{_common.describe(weights)}")
  correct = _is_first_argmax(logits, labels).astype(jnp.float32)
  return _weighted_mean(correct, weights.astype(jnp.float32), axis_name)
