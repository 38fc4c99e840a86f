"""ssljax.losses on one device: values against float64 references written from the papers,
gradients against finite differences of those references, blockwise against dense, input
checks, bfloat16 and degenerate inputs.

The references below use numpy float64 and explicit loops over the papers' indices; they share
no code with the implementation.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax import losses

# ---------------------------------------------------------------------------------------------
# float64 references, one per paper equation
# ---------------------------------------------------------------------------------------------


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_nt_xent(z1, z2, tau):
  """arXiv:2002.05709 eq. (1), views interleaved as in the paper: 2k-1 <-> 2k (0-based 2k, 2k+1)."""
  n = z1.shape[0]
  views = np.empty((2 * n, z1.shape[1]))
  views[0::2], views[1::2] = z1, z2
  views = _unit(views)

  def ell(i, j):
    denominator = sum(math.exp(views[i] @ views[k] / tau) for k in range(2 * n) if k != i)
    return -math.log(math.exp(views[i] @ views[j] / tau) / denominator)

  return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def ref_info_nce(q, k, tau):
  q, k = _unit(q), _unit(k)
  n = q.shape[0]
  total = 0.0
  for i in range(n):
    denominator = sum(math.exp(q[i] @ k[j] / tau) for j in range(n))
    total += -math.log(math.exp(q[i] @ k[i] / tau) / denominator)
  return total / n


def ref_clip(image, text, scale):
  image, text = _unit(image), _unit(text)
  logits = scale * image @ text.T
  n = logits.shape[0]

  def cross_entropy(rows):
    return np.mean([-rows[i, i] + np.log(np.sum(np.exp(rows[i]))) for i in range(n)])

  return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def ref_siglip(image, text, t, b):
  image, text = _unit(image), _unit(text)
  n = image.shape[0]
  total = 0.0
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      total += -math.log(1.0 / (1.0 + math.exp(-z * (t * image[i] @ text[j] + b))))
  return total / n


def ref_byol(p, t):
  return np.mean([np.sum((p[i] / np.linalg.norm(p[i]) - t[i] / np.linalg.norm(t[i]))**2)
                  for i in range(p.shape[0])])


def ref_vicreg_terms(z1, z2, eps=1e-4):
  n, d = z1.shape
  invariance = np.sum((z1 - z2)**2) / (n * d)

  def v(z):
    return np.mean([max(0.0, 1.0 - math.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(d)])

  def c(z):
    cov = np.cov(z, rowvar=False, ddof=1)
    return sum(cov[i, j]**2 for i in range(d) for j in range(d) if i != j) / d

  return {"invariance": invariance, "variance": v(z1) + v(z2), "covariance": c(z1) + c(z2)}


def ref_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0):
  terms = ref_vicreg_terms(z1, z2)
  return lam * terms["invariance"] + mu * terms["variance"] + nu * terms["covariance"]


def _nll(logits, label):
  return -(logits[label] - np.log(np.sum(np.exp(logits))))


def ref_masked_lm(logits, labels, weights):
  flat_logits = logits.reshape(-1, logits.shape[-1])
  total = sum(w * _nll(l, y) for l, y, w in zip(flat_logits, labels.ravel(), weights.ravel())
              if w != 0)
  return total / np.sum(weights)


def ref_next_token(logits, tokens, mask):
  b, t, _ = logits.shape
  num = sum(mask[i, s + 1] * _nll(logits[i, s], tokens[i, s + 1])
            for i in range(b) for s in range(t - 1))
  return num / sum(mask[i, s + 1] for i in range(b) for s in range(t - 1))


def ref_classification(logits, labels):
  return np.mean([_nll(l, y) for l, y in zip(logits, labels)])


def numeric_grad(f, *args, eps=1e-6):
  """Central differences of a float64 function, for every argument."""
  grads = []
  for a, arg in enumerate(args):
    grad = np.zeros_like(arg)
    for idx in np.ndindex(arg.shape):
      plus = [x.copy() for x in args]
      minus = [x.copy() for x in args]
      plus[a][idx] += eps
      minus[a][idx] -= eps
      grad[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    grads.append(grad)
  return grads


# ---------------------------------------------------------------------------------------------
# the cases: (our function of float32 arrays, reference of float64 arrays, inputs)
# ---------------------------------------------------------------------------------------------

_rng = np.random.default_rng(0)
_A = _rng.normal(size=(6, 4))
_B = _A + 0.7 * _rng.normal(size=(6, 4))  # correlated pairs, as real positives are
# VICReg inputs scaled so every std sits well inside the hinge (no kink near the FD points).
_V1 = 0.5 * _rng.normal(size=(7, 3))
_V2 = _V1 + 0.3 * _rng.normal(size=(7, 3))

EMBEDDING_CASES = {
    "nt_xent": (lambda a, b: losses.nt_xent(a, b, temperature=0.3),
                lambda a, b: ref_nt_xent(a, b, 0.3), (_A, _B)),
    "nt_xent_block": (lambda a, b: losses.nt_xent(a, b, temperature=0.3, block_size=5),
                      lambda a, b: ref_nt_xent(a, b, 0.3), (_A, _B)),
    "info_nce": (lambda a, b: losses.info_nce(a, b, temperature=0.2),
                 lambda a, b: ref_info_nce(a, b, 0.2), (_A, _B)),
    "info_nce_block": (lambda a, b: losses.info_nce(a, b, temperature=0.2, block_size=4),
                       lambda a, b: ref_info_nce(a, b, 0.2), (_A, _B)),
    "clip": (lambda a, b: losses.clip_loss(a, b, 7.0),
             lambda a, b: ref_clip(a, b, 7.0), (_A, _B)),
    "clip_block": (lambda a, b: losses.clip_loss(a, b, 7.0, block_size=4),
                   lambda a, b: ref_clip(a, b, 7.0), (_A, _B)),
    "siglip": (lambda a, b: losses.siglip_loss(a, b, 5.0, -2.0),
               lambda a, b: ref_siglip(a, b, 5.0, -2.0), (_A, _B)),
    "byol": (losses.byol_loss, ref_byol, (_A, _B)),
    "vicreg": (losses.vicreg_loss, ref_vicreg, (_V1, _V2)),
}


@functools.cache
def _value_and_grad(name):
  """One compile per case, shared by the value and the gradient test."""
  ours, _, _ = EMBEDDING_CASES[name]
  return jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))


@pytest.mark.parametrize("name", list(EMBEDDING_CASES))
def test_value_matches_float64_reference(name):
  _, ref, args = EMBEDDING_CASES[name]
  value, _ = _value_and_grad(name)(*[jnp.asarray(a, jnp.float32) for a in args])
  assert value.dtype == jnp.float32 and value.shape == ()
  np.testing.assert_allclose(value, ref(*args), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(EMBEDDING_CASES))
def test_gradient_matches_finite_differences_of_reference(name):
  _, ref, args = EMBEDDING_CASES[name]
  _, grads = _value_and_grad(name)(*[jnp.asarray(a, jnp.float32) for a in args])
  expected = numeric_grad(ref, *args)
  if name == "byol":  # the target is under stop_gradient: only the prediction learns
    expected[1] = np.zeros_like(expected[1])
  for got, want in zip(grads, expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_nt_xent_hand_computed_orthogonal_pairs():
  # Two pairs, each view equal to its partner and orthogonal to the other pair: every anchor
  # sees its positive at cosine 1 and two negatives at cosine 0, so
  # loss = -log(e^(1/tau) / (e^(1/tau) + 2 e^0)) = log(1 + 2 e^(-1/tau)).
  z = jnp.array([[3.0, 0.0], [0.0, 0.5]])  # lengths differ: the loss normalises

  @jax.jit
  def dense_and_blockwise(z1, z2, tau):
    return (losses.nt_xent(z1, z2, temperature=tau),
            losses.nt_xent(z1, z2, temperature=tau, block_size=1))

  for tau in (1.0, 0.5):
    expected = math.log(1.0 + 2.0 * math.exp(-1.0 / tau))
    np.testing.assert_allclose(dense_and_blockwise(z, z, tau), [expected] * 2, rtol=1e-6)
  # Partners pointing away from each other: positive at cosine -1.
  np.testing.assert_allclose(dense_and_blockwise(z, -z, 1.0), [math.log(1.0 + 2.0 * math.e)] * 2,
                             rtol=1e-6)


def test_vicreg_terms_match_reference():
  terms = losses.vicreg_terms(jnp.asarray(_V1, jnp.float32), jnp.asarray(_V2, jnp.float32))
  expected = ref_vicreg_terms(_V1, _V2)
  assert set(terms) == {"invariance", "variance", "covariance"}
  for key, want in expected.items():
    np.testing.assert_allclose(terms[key], want, rtol=2e-6, err_msg=key)
  # The weights apply to the terms as in eq. (6).
  np.testing.assert_allclose(
      losses.vicreg_loss(_V1, _V2, sim_weight=2.0, var_weight=3.0, cov_weight=5.0),
      2 * expected["invariance"] + 3 * expected["variance"] + 5 * expected["covariance"],
      rtol=2e-6)


def test_vicreg_variance_hinge_is_summed_over_branches():
  # Constant embeddings: std = sqrt(eps) in every dimension, so v(Z) = 1 - sqrt(eps) per branch
  # and the summed term is twice that.
  z = jnp.ones((5, 3))
  terms = losses.vicreg_terms(z, z)
  np.testing.assert_allclose(terms["variance"], 2 * (1 - math.sqrt(1e-4)), rtol=1e-6)
  assert float(terms["covariance"]) == 0.0 and float(terms["invariance"]) == 0.0


# ---------------------------------------------------------------------------------------------
# token and class losses
# ---------------------------------------------------------------------------------------------

_LOGITS = _rng.normal(size=(2, 5, 7))
_TOKENS = _rng.integers(0, 7, size=(2, 5))
_WEIGHTS = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, 0.5]], np.float64)


def test_masked_lm_loss_matches_reference():
  labels = _TOKENS.copy()
  labels[_WEIGHTS == 0] = -100  # ignored positions may hold any id
  ours, grad = jax.jit(jax.value_and_grad(losses.masked_lm_loss))(
      jnp.asarray(_LOGITS, jnp.float32), labels, _WEIGHTS)
  np.testing.assert_allclose(ours, ref_masked_lm(_LOGITS, labels, _WEIGHTS), rtol=2e-6)
  want, = numeric_grad(lambda l: ref_masked_lm(l, labels, _WEIGHTS), _LOGITS)
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
  zero = losses.masked_lm_loss(_LOGITS, labels, np.zeros_like(_WEIGHTS))
  assert float(zero) == 0.0


def test_next_token_loss_shifts_and_masks():
  mask = (_rng.random(size=_TOKENS.shape) > 0.3).astype(np.float64)
  mask[0, 3] = 1.0
  value_and_grad = jax.jit(jax.value_and_grad(losses.next_token_loss))
  ours, grad = value_and_grad(jnp.asarray(_LOGITS, jnp.float32), _TOKENS, mask)
  np.testing.assert_allclose(ours, ref_next_token(_LOGITS, _TOKENS, mask), rtol=2e-6)
  no_mask = jax.jit(losses.next_token_loss)(_LOGITS, _TOKENS)
  np.testing.assert_allclose(no_mask, ref_next_token(_LOGITS, _TOKENS, np.ones_like(mask)),
                             rtol=2e-6)
  want, = numeric_grad(lambda l: ref_next_token(l, _TOKENS, mask), _LOGITS)
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
  # The last position predicts nothing, so its logits get no gradient.
  assert float(jnp.abs(grad[:, -1]).max()) == 0.0


def test_classification_loss_and_accuracy():
  logits = _LOGITS[0]  # (5, 7)
  labels = _TOKENS[0]
  value, grad = jax.jit(jax.value_and_grad(losses.classification_loss))(
      jnp.asarray(logits, jnp.float32), labels)
  np.testing.assert_allclose(value, ref_classification(logits, labels), rtol=2e-6)
  want, = numeric_grad(lambda l: ref_classification(l, labels), logits)
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
  expected_accuracy = np.mean(np.argmax(logits, -1) == labels)
  accuracy = jax.jit(losses.accuracy)
  np.testing.assert_allclose(accuracy(logits, labels), expected_accuracy)
  np.testing.assert_allclose(accuracy(logits, np.argmax(logits, -1)), 1.0)


def ref_weighted_classification(logits, labels, weights):
  return sum(w * _nll(l, y) for l, y, w in zip(logits, labels, weights)) / np.sum(weights)


def ref_tagging(logits, tags, weights):
  """Each labelled token (tag >= 0) of each row, weighted by its row's weight."""
  pairs = [(weights[b], _nll(logits[b, t], tags[b, t])) for b in range(tags.shape[0])
           for t in range(tags.shape[1]) if tags[b, t] >= 0]
  return sum(w * nll for w, nll in pairs) / sum(w for w, _ in pairs)


def ref_span(start, end, starts, ends, context, weights):
  """(CE(start) + CE(end)) / 2 per row, each softmax over the row's context positions only."""
  total = 0.0
  for b in range(start.shape[0]):
    ctx = list(np.flatnonzero(context[b]))
    row = (_nll(start[b, ctx], ctx.index(starts[b])) + _nll(end[b, ctx], ctx.index(ends[b]))) / 2
    total += weights[b] * row
  return total / np.sum(weights)


def test_weighted_classification_loss_matches_reference():
  logits, labels = _LOGITS[0], _TOKENS[0]  # (5, 7), (5,)
  weights = np.array([1.0, 0.0, 1.0, 0.5, 1.0])  # a padding row (0) counts for nothing
  value, grad = jax.jit(jax.value_and_grad(lambda l: losses.classification_loss(l, labels, weights=weights)))(
      jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(value, ref_weighted_classification(logits, labels, weights), rtol=2e-6)
  want, = numeric_grad(lambda l: ref_weighted_classification(l, labels, weights), logits)
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
  assert float(losses.classification_loss(logits, labels, weights=np.zeros(5))) == 0.0


def test_tagging_loss_matches_reference():
  tags = np.array([[-1, 2, -1, 0, 6], [-1, 1, 3, -1, -1]])
  weights = np.array([1.0, 0.5])
  value, grad = jax.jit(jax.value_and_grad(lambda l: losses.tagging_loss(l, tags, weights)))(
      jnp.asarray(_LOGITS, jnp.float32))
  np.testing.assert_allclose(value, ref_tagging(_LOGITS, tags, weights), rtol=2e-6)
  want, = numeric_grad(lambda l: ref_tagging(l, tags, weights), _LOGITS)
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)
  # Without weights every row counts fully: 5 labelled tokens, each once.
  np.testing.assert_allclose(losses.tagging_loss(_LOGITS, tags), ref_tagging(_LOGITS, tags, np.ones(2)), rtol=2e-6)


def test_span_loss_matches_reference_and_ignores_logits_outside_the_context():
  start, end = _rng.normal(size=(3, 6)), _rng.normal(size=(3, 6))
  start[:, 0] = end[:, 0] = 50.0  # a huge logit on [CLS], outside the context
  context = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]], bool)
  starts, ends, weights = np.array([2, 3, 1]), np.array([4, 5, 2]), np.array([1.0, 1.0, 0.0])
  fn = jax.jit(jax.value_and_grad(lambda s, e: losses.span_loss(s, e, starts, ends, context, weights), argnums=(0, 1)))
  value, grads = fn(jnp.asarray(start, jnp.float32), jnp.asarray(end, jnp.float32))
  np.testing.assert_allclose(value, ref_span(start, end, starts, ends, context, weights), rtol=1e-5)
  want = numeric_grad(lambda s, e: ref_span(s, e, starts, ends, context, weights), start, end)
  for got, expected in zip(grads, want):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_accuracy_by_hand_with_ties_and_weights():
  logits = jnp.array([[0.0, 2.0, 1.0], [3.0, 3.0, -1.0], [0.5, 0.1, 0.2], [1.0, 1.0, 1.0]])
  # Row 0's argmax is 1; rows 1 and 3 tie at the top, and the first tied class is the argmax
  # (as jnp.argmax picks it): 0 in both; row 2's is 0.
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([1, 0, 2, 2])), 2 / 4)
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([1, 1, 0, 0])), 3 / 4)
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([0, 2, 1, 1])), 0 / 4)
  # Weighted: rows 2 (right) and 3 (wrong) left out -> 1 of the 2 counted rows is right.
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([1, 2, 0, 2]), weights=jnp.array([1.0, 1.0, 0.0, 0.0])), 1 / 2)
  # A label outside [0, C) is never the argmax; at weight 0 (ignored slots) it changes nothing.
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([1, -100, 2, 99]), weights=jnp.array([1.0, 0.0, 1.0, 0.0])), 1 / 2)
  np.testing.assert_allclose(losses.accuracy(logits, jnp.array([1, -100, 0, 99])), 2 / 4)


def test_accuracy_equals_numpy_argmax_with_many_ties():
  rng = np.random.default_rng(0)
  logits = np.round(rng.normal(size=(400, 6)))  # integers: ties at the top in many rows
  labels = rng.integers(0, 6, size=400)
  assert np.mean(np.sort(logits, -1)[:, -1] == np.sort(logits, -1)[:, -2]) > 0.1
  np.testing.assert_allclose(jax.jit(losses.accuracy)(logits, labels), np.mean(np.argmax(logits, -1) == labels))


# ---------------------------------------------------------------------------------------------
# blockwise == dense, including blocks that do not divide N
# ---------------------------------------------------------------------------------------------


def _all_three(z1, z2, tau, scale, block):
  return (losses.nt_xent(z1, z2, temperature=tau, block_size=block)
          + 2.0 * losses.info_nce(z1, z2, temperature=tau / 2, block_size=block)
          + 3.0 * losses.clip_loss(z1, z2, scale, block_size=block))


_all_three_value_and_grad = jax.jit(jax.value_and_grad(_all_three, argnums=(0, 1, 2, 3)),
                                    static_argnums=4)


def _blockwise_inputs():
  keys = jax.random.split(jax.random.key(1), 2)
  z1 = jax.random.normal(keys[0], (13, 8))
  z2 = z1 + 0.5 * jax.random.normal(keys[1], (13, 8))
  return z1, z2, jnp.float32(0.3), jnp.float32(9.0)


# 5 leaves a partial last block of rows and of columns; 64 is larger than the whole matrix.
@pytest.mark.parametrize("block_size", [5, 64])
def test_blockwise_equals_dense(block_size):
  """nt_xent + info_nce + clip_loss, value and gradients w.r.t. the embeddings, the
  temperature and the logit scale."""
  inputs = _blockwise_inputs()
  dense = _all_three_value_and_grad(*inputs, None)
  blockwise = _all_three_value_and_grad(*inputs, block_size)
  assert all(float(jnp.abs(g).max()) > 1e-3 for g in dense[1])  # every gradient is exercised
  chex.assert_trees_all_close(blockwise, dense, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# dtypes, degenerate inputs, input checks
# ---------------------------------------------------------------------------------------------


# Every loss of this file on (z1, z2, logits, start logits, end logits): bfloat16 embeddings and
# logits go in; the integer labels, masks and weights are the same for both dtypes.
_STARTS, _ENDS = np.array([1, 2]), np.array([3, 2])
_CONTEXT = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]], bool)
_LOSSES_OF_EMBEDDINGS_AND_LOGITS = {
    "nt_xent": lambda z1, z2, _, s, e: losses.nt_xent(z1, z2, temperature=0.3),
    "nt_xent_block": lambda z1, z2, _, s, e: losses.nt_xent(z1, z2, temperature=0.3, block_size=4),
    "info_nce": lambda z1, z2, _, s, e: losses.info_nce(z1, z2, temperature=0.3, block_size=4),
    "byol": lambda z1, z2, _, s, e: losses.byol_loss(z1, z2),
    "vicreg": lambda z1, z2, _, s, e: losses.vicreg_loss(z1, z2),
    "clip": lambda z1, z2, _, s, e: losses.clip_loss(z1, z2, 3.0),
    "clip_block": lambda z1, z2, _, s, e: losses.clip_loss(z1, z2, 3.0, block_size=4),
    "siglip": lambda z1, z2, _, s, e: losses.siglip_loss(z1, z2, 3.0, 0.0),
    "classification": lambda z1, z2, logits, s, e: losses.classification_loss(logits[0], _TOKENS[0]),
    "masked_lm": lambda z1, z2, logits, s, e: losses.masked_lm_loss(logits, _TOKENS, _WEIGHTS),
    "next_token": lambda z1, z2, logits, s, e: losses.next_token_loss(logits, _TOKENS),
    "tagging": lambda z1, z2, logits, s, e: losses.tagging_loss(logits, _TOKENS),
    "span": lambda z1, z2, logits, s, e: losses.span_loss(s, e, _STARTS, _ENDS, _CONTEXT),
}


def test_bfloat16_inputs_are_computed_in_float32():
  """Each loss of bfloat16 inputs is float32 and equals, to float32 rounding, the same loss of
  those inputs cast to float32: a loss computed in bfloat16 and cast at the end is ~1e-3 off."""
  inputs = [jnp.asarray(x, jnp.bfloat16) for x in (_A, _B, _LOGITS, _LOGITS[:, :, 0] * 2, _LOGITS[:, :, 1] * 2)]
  upcast = [x.astype(jnp.float32) for x in inputs]
  for name, loss in _LOSSES_OF_EMBEDDINGS_AND_LOGITS.items():
    value, reference = jax.jit(loss)(*inputs), jax.jit(loss)(*upcast)
    assert value.dtype == jnp.float32, (name, value.dtype)
    np.testing.assert_allclose(value, reference, rtol=2e-6, err_msg=name)
  # And float32 maths on the bfloat16-rounded inputs is the paper's formula on them, in float64.
  rounded = [np.asarray(z, np.float64) for z in upcast[:2]]
  np.testing.assert_allclose(jax.jit(losses.nt_xent, static_argnames="temperature")(*inputs[:2], temperature=0.3),
                             ref_nt_xent(*rounded, 0.3), rtol=2e-6)


_DEGENERATE = {
    "zeros": (np.zeros((4, 3)), np.zeros((4, 3))),
    "identical": (np.ones((4, 3)), np.ones((4, 3))),
    "one_zero_row": (np.vstack([np.zeros((1, 3)), _A[:3, :3]]), _B[:4, :3]),
}

_ALL_EMBEDDING_LOSSES = {
    "nt_xent": lambda a, b: losses.nt_xent(a, b, temperature=0.1),
    "nt_xent_block": lambda a, b: losses.nt_xent(a, b, temperature=0.1, block_size=3),
    "info_nce": lambda a, b: losses.info_nce(a, b, temperature=0.1, block_size=3),
    "clip": lambda a, b: losses.clip_loss(a, b, 100.0),
    "siglip": lambda a, b: losses.siglip_loss(a, b, 10.0, -10.0),
    "byol": losses.byol_loss,
    "vicreg": losses.vicreg_loss,
}


def test_degenerate_inputs_give_finite_values_and_gradients():

  @jax.jit  # every case has the same shapes: one compile for all losses and cases
  def values_and_grads(a, b):
    return {name: jax.value_and_grad(fn, argnums=(0, 1))(a, b)
            for name, fn in _ALL_EMBEDDING_LOSSES.items()}

  for case, (a, b) in _DEGENERATE.items():
    results = values_and_grads(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    for name, (value, grads) in results.items():
      assert np.isfinite(float(value)), (name, case)
      assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads), (name, case)


def test_l2_normalize():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(jax.jit(losses.l2_normalize)(x), [[0.6, 0.8], [0.0, 0.0]],
                             rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(jax.jit(jax.jacobian(losses.l2_normalize))(x))))


_BAD_CALLS = [
    (lambda: losses.nt_xent(np.ones((4, 3)), np.ones((5, 3)), temperature=0.1), "z1 and z2"),
    (lambda: losses.nt_xent(np.ones((4,)), np.ones((4,)), temperature=0.1), "z1"),
    (lambda: losses.nt_xent(np.ones((4, 3), np.int32), np.ones((4, 3)), temperature=0.1),
     "floating"),
    (lambda: losses.nt_xent(np.ones((4, 3)), np.ones((4, 3)), temperature=0.0), "temperature"),
    (lambda: losses.nt_xent(np.ones((4, 3)), np.ones((4, 3)), temperature=0.1, block_size=0),
     "block_size"),
    (lambda: losses.info_nce(np.ones((4, 3)), np.ones((4, 2)), temperature=0.1),
     "queries and keys"),
    (lambda: losses.clip_loss(np.ones((4, 3)), np.ones((4, 3)), jnp.ones(2)), "logit_scale"),
    (lambda: losses.clip_loss(np.ones((4, 3)), np.ones((3, 3)), 1.0),
     "image_features and text_features"),
    (lambda: losses.siglip_loss(np.ones((4, 3)), np.ones((4, 3)), 1.0, jnp.ones((1, 1))),
     "logit_bias"),
    (lambda: losses.byol_loss(np.ones((4, 3)), np.ones((4, 4))), "prediction and target"),
    (lambda: losses.vicreg_loss(np.ones((1, 3)), np.ones((1, 3))), "at least 2 rows"),
    (lambda: losses.masked_lm_loss(np.ones((2, 3, 5)), np.ones((2, 3), np.int32),
                                   np.ones((2, 4))), "weights"),
    (lambda: losses.masked_lm_loss(np.ones((2, 3, 5)), np.ones((2, 3)), np.ones((2, 3))),
     "labels must be integer"),
    (lambda: losses.next_token_loss(np.ones((2, 3, 5)), np.ones((2, 4), np.int32)), "tokens"),
    (lambda: losses.next_token_loss(np.ones((2, 3, 5)), np.ones((2, 3), np.int32),
                                    np.ones((2, 2))), "mask"),
    (lambda: losses.classification_loss(np.ones((4, 5)), np.ones((3,), np.int32)),
     r"labels must have shape"),
    (lambda: losses.classification_loss(np.ones((4, 5)), np.ones((4,), np.int32), weights=np.ones(3)),
     r"classification_loss: weights must have shape \(4,\)"),
    (lambda: losses.tagging_loss(np.ones((4, 5)), np.ones((4,), np.int32)), r"tagging_loss: logits must be \(B, T, K\)"),
    (lambda: losses.span_loss(np.ones((2, 5)), np.ones((2, 4)), np.zeros(2, np.int32), np.zeros(2, np.int32),
                              np.ones((2, 5), bool)), "span_loss: start_logits, end_logits and context_mask"),
]


@pytest.mark.parametrize("call,message", _BAD_CALLS)
def test_bad_inputs_raise_value_error_naming_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_losses_import_no_flax_and_nothing_else_of_ssljax():
  import ast
  import pathlib
  package = pathlib.Path(losses.__file__).parent
  for path in package.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      for name in names:
        assert not name.startswith("flax"), (path.name, name)
        assert not name.startswith("ssljax") or name.startswith("ssljax.losses"), (path.name,
                                                                                    name)
