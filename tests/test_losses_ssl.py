"""The losses of DINO, MoCo v3, Barlow Twins, SwAV and MAE on one device.

Values against float64 references written from the papers' formulas (numpy, explicit loops over
the papers' indices, no code shared with ssljax.losses), gradients against central differences
of those references, hand-computed cases, input checks, bfloat16 and degenerate inputs. Across
devices: tests/test_losses_sharded.py.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax import losses

# ---------------------------------------------------------------------------------------------
# float64 references
# ---------------------------------------------------------------------------------------------


def _softmax(x):
  e = np.exp(x - np.max(x))
  return e / np.sum(e)


def _log_softmax(x):
  shifted = x - np.max(x)
  return shifted - np.log(np.sum(np.exp(shifted)))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_dino(student, teacher, center, tau_s=0.1, tau_t=0.04):
  """arXiv:2104.14294 eq. (3) and Algorithm 1, averaged over the pairs and the batch."""
  total, terms = 0.0, 0
  for t in range(teacher.shape[0]):
    for s in range(student.shape[0]):
      if s == t:
        continue
      for b in range(student.shape[1]):
        p_teacher = _softmax((teacher[t, b] - center) / tau_t)
        total += -np.sum(p_teacher * _log_softmax(student[s, b] / tau_s))
        terms += 1
  return total / terms


def ref_dino_center(center, teacher, m=0.9):
  """eq. (4): c <- m c + (1 - m) mean of the teacher outputs over crops and batch."""
  num_crops, n, _ = teacher.shape
  batch_mean = sum(teacher[t, b] for t in range(num_crops) for b in range(n)) / (num_crops * n)
  return m * center + (1 - m) * batch_mean


def ref_moco_ctr(q, k, tau):
  """arXiv:2104.02057 Algorithm 1: 2 tau * CrossEntropy(q k^T / tau, labels = arange(N))."""
  q, k = _unit(q), _unit(k)
  n = q.shape[0]
  total = 0.0
  for i in range(n):
    logits = np.array([q[i] @ k[j] / tau for j in range(n)])
    total += -(logits[i] - np.log(np.sum(np.exp(logits))))
  return 2 * tau * total / n


def ref_moco_v3(q1, q2, k1, k2, tau=0.2):
  return ref_moco_ctr(q1, k2, tau) + ref_moco_ctr(q2, k1, tau)


def ref_barlow_correlation(z1, z2, eps=1e-5):
  """arXiv:2103.03230 eq. (2), with BatchNorm's standardisation (biased variance, eps inside)."""
  n, d = z1.shape

  def standardise(z):
    out = np.empty_like(z)
    for i in range(d):
      mean = sum(z[b, i] for b in range(n)) / n
      var = sum((z[b, i] - mean)**2 for b in range(n)) / n
      out[:, i] = (z[:, i] - mean) / math.sqrt(var + eps)
    return out

  a, b = standardise(z1), standardise(z2)
  return np.array([[sum(a[k, i] * b[k, j] for k in range(n)) / n for j in range(d)]
                   for i in range(d)])


def ref_barlow_terms(z1, z2, eps=1e-5):
  c = ref_barlow_correlation(z1, z2, eps)
  d = c.shape[0]
  return {"on_diagonal": sum((1 - c[i, i])**2 for i in range(d)),
          "off_diagonal": sum(c[i, j]**2 for i in range(d) for j in range(d) if i != j)}


def ref_barlow_twins(z1, z2, lam=5e-3, eps=1e-5):
  """eq. (1)."""
  terms = ref_barlow_terms(z1, z2, eps)
  return terms["on_diagonal"] + lam * terms["off_diagonal"]


def ref_sinkhorn(scores, eps=0.05, iterations=3):
  """arXiv:2006.09882 Appendix A.1's Sinkhorn-Knopp, with no shift of the scores."""
  q = np.exp(scores / eps).T  # (K, B)
  k, b = q.shape
  q = q / np.sum(q)
  for _ in range(iterations):
    q = q / np.sum(q, axis=1, keepdims=True) / k
    q = q / np.sum(q, axis=0, keepdims=True) / b
  return (q * b).T


def ref_swav(scores, num_assigned=2, tau=0.1, eps=0.05, iterations=3, codes_from=None):
  """Section 3.1 eq. (2) with multi-crop (Section 3.2): crop a's codes predicted by every
  other crop. `codes_from` computes the codes from other scores, held fixed (the stop-gradient
  of the codes when differentiating)."""
  codes_from = scores if codes_from is None else codes_from
  num_crops, n, _ = scores.shape
  total = 0.0
  for a in range(num_assigned):
    codes = ref_sinkhorn(codes_from[a], eps, iterations)
    crop_loss = 0.0
    for v in range(num_crops):
      if v == a:
        continue
      for b in range(n):
        crop_loss += -np.sum(codes[b] * _log_softmax(scores[v, b] / tau))
    total += crop_loss / ((num_crops - 1) * n)
  return total / num_assigned


def ref_mae(predictions, targets, mask, normalize=True, eps=1e-6):
  """arXiv:2111.06377 Section 3: per-patch MSE on the masked patches, targets normalised per
  patch by their mean and unbiased variance."""
  n, num_patches, pixels = predictions.shape
  weighted, total = 0.0, 0.0
  for b in range(n):
    for p in range(num_patches):
      target = targets[b, p]
      if normalize:
        mean = sum(target) / pixels
        var = sum((x - mean)**2 for x in target) / (pixels - 1)
        target = (target - mean) / math.sqrt(var + eps)
      weighted += mask[b, p] * np.mean((predictions[b, p] - target)**2)
      total += mask[b, p]
  return weighted / total if total else 0.0


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
# value and gradient against the references
# ---------------------------------------------------------------------------------------------

_rng = np.random.default_rng(0)
_STUDENT = _rng.normal(size=(4, 3, 5))  # S = 4 crops, n = 3, K = 5
_TEACHER = _STUDENT[:2] + 0.3 * _rng.normal(size=(2, 3, 5))  # the T = 2 global crops
_CENTER = 0.2 * _rng.normal(size=5)
_Q1, _Q2 = _rng.normal(size=(5, 4)), _rng.normal(size=(5, 4))
_K1, _K2 = _Q1 + 0.5 * _rng.normal(size=(5, 4)), _Q2 + 0.5 * _rng.normal(size=(5, 4))
_Z1 = _rng.normal(size=(6, 3)) * np.array([0.5, 1.0, 2.0])
_Z2 = _Z1 + 0.6 * _rng.normal(size=(6, 3))
# Cosine-like scores of V = 3 crops of 6 examples against 4 prototypes.
_SCORES = np.tanh(_rng.normal(size=(3, 6, 4)))
_PREDICTIONS = _rng.normal(size=(3, 4, 5))  # n = 3, L = 4, P = 5
_TARGETS = 2.0 + 3.0 * _rng.normal(size=(3, 4, 5))
_MASK = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0.5, 1, 0, 1]])  # row 1: nothing masked


# name: (ours on float32 arrays, float64 reference, inputs, indices of the inputs under
#        stop_gradient, whose gradient must be 0)
CASES = {
    "dino": (lambda s, t, c: losses.dino_loss(s, t, c),
             ref_dino, (_STUDENT, _TEACHER, _CENTER), (1, 2)),
    "dino_temperatures": (
        lambda s, t, c: losses.dino_loss(s, t, c, student_temperature=0.3, teacher_temperature=0.07),
        lambda s, t, c: ref_dino(s, t, c, 0.3, 0.07), (_STUDENT, _TEACHER, _CENTER), (1, 2)),
    "dino_one_teacher_crop": (lambda s, t, c: losses.dino_loss(s, t[:1], c),
                              lambda s, t, c: ref_dino(s, t[:1], c),
                              (_STUDENT, _TEACHER, _CENTER), (1, 2)),
    "moco_v3": (lambda *x: losses.moco_v3_loss(*x), ref_moco_v3, (_Q1, _Q2, _K1, _K2), (2, 3)),
    "moco_v3_blockwise": (lambda *x: losses.moco_v3_loss(*x, temperature=0.5, block_size=2),
                          lambda *x: ref_moco_v3(*x, tau=0.5), (_Q1, _Q2, _K1, _K2), (2, 3)),
    "barlow_twins": (losses.barlow_twins_loss, ref_barlow_twins, (_Z1, _Z2), ()),
    "barlow_twins_on_diagonal": (
        lambda a, b: losses.barlow_twins_terms(a, b)["on_diagonal"],
        lambda a, b: ref_barlow_terms(a, b)["on_diagonal"], (_Z1, _Z2), ()),
    "barlow_twins_off_diagonal": (
        lambda a, b: losses.barlow_twins_terms(a, b)["off_diagonal"],
        lambda a, b: ref_barlow_terms(a, b)["off_diagonal"], (_Z1, _Z2), ()),
    "swav": (lambda s: losses.swav_loss(s), ref_swav, (_SCORES,), ()),
    "swav_one_assigned": (lambda s: losses.swav_loss(s, num_assigned=1, temperature=0.2, iterations=5),
                          lambda s, **kw: ref_swav(s, 1, 0.2, 0.05, 5, **kw), (_SCORES,), ()),
    "mae": (lambda p, t: losses.mae_loss(p, t, _MASK),
            lambda p, t: ref_mae(p, t, _MASK), (_PREDICTIONS, _TARGETS), ()),
    "mae_raw_pixels": (lambda p, t: losses.mae_loss(p, t, _MASK, normalize_target=False),
                       lambda p, t: ref_mae(p, t, _MASK, normalize=False),
                       (_PREDICTIONS, _TARGETS), ()),
}


@functools.cache
def _value_and_grad(name):
  ours, _, args, _ = CASES[name]
  return jax.jit(jax.value_and_grad(ours, argnums=tuple(range(len(args)))))


@pytest.mark.parametrize("name", list(CASES))
def test_value_matches_float64_reference(name):
  _, ref, args, _ = CASES[name]
  value, _ = _value_and_grad(name)(*[jnp.asarray(a, jnp.float32) for a in args])
  assert value.dtype == jnp.float32 and value.shape == ()
  np.testing.assert_allclose(value, ref(*args), rtol=2e-6, atol=1e-6)


def _reference_to_differentiate(name):
  """SwAV's codes are constants: its reference is differentiated with the codes computed once
  from the unperturbed scores."""
  _, ref, args, _ = CASES[name]
  if name.startswith("swav"):
    return lambda scores: ref(scores, codes_from=args[0])
  return ref


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_finite_differences_of_reference(name):
  _, _, args, constants = CASES[name]
  _, grads = _value_and_grad(name)(*[jnp.asarray(a, jnp.float32) for a in args])
  expected = numeric_grad(_reference_to_differentiate(name), *args)
  for i in constants:  # teachers, centres and keys are under stop_gradient
    expected[i] = np.zeros_like(expected[i])
  for i, (got, want) in enumerate(zip(grads, expected)):
    if i not in constants:
      assert np.abs(want).max() > 1e-3, f"argument {i}'s gradient is ~0: the case checks nothing"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=f"argument {i}")


def test_swav_codes_do_carry_a_gradient_that_the_loss_stops():
  """The full derivative of the reference (through the codes) differs from the stopped one,
  so the gradient test above does tell a stop_gradient from none."""
  through_codes, = numeric_grad(ref_swav, _SCORES)
  codes_fixed, = numeric_grad(lambda s: ref_swav(s, codes_from=_SCORES), _SCORES)
  assert np.abs(through_codes - codes_fixed).max() > 1e-2


# ---------------------------------------------------------------------------------------------
# DINO
# ---------------------------------------------------------------------------------------------


def test_dino_uniform_teacher_and_student_give_log_k():
  # Teacher outputs equal to the centre: P_t is uniform whatever tau_t; a constant student is
  # uniform too, so every pair's cross-entropy is log K.
  center = jnp.array([0.3, -1.0, 2.0, 0.5, 0.0, 1.0])
  teacher = jnp.broadcast_to(center, (2, 4, 6))
  student = jnp.full((5, 4, 6), 3.0)
  np.testing.assert_allclose(losses.dino_loss(student, teacher, center), math.log(6), rtol=1e-6)


def test_dino_hand_computed_pairs_skip_the_same_crop():
  # Teacher crop 0 is sure of class 0, crop 1 of class 1 (a margin of 2 over tau_t = 0.04:
  # P_t is one-hot to e^-50). Student logits tau_s * log p make P_s = p exactly. Only the
  # pairs (t=0, s=1) and (t=1, s=0) count: loss = (-log p_1[0] - log p_0[1]) / 2.
  p0, p1 = np.array([0.1, 0.6, 0.3]), np.array([0.7, 0.2, 0.1])
  student = 0.1 * np.log(np.stack([p0, p1]))[:, None, :]  # (2, 1, 3)
  center = np.array([0.5, -0.5, 1.0])
  teacher = (center + 2.0 * np.eye(3)[:2])[:, None, :]  # (2, 1, 3)
  expected = (-math.log(p1[0]) - math.log(p0[1])) / 2
  np.testing.assert_allclose(losses.dino_loss(student, teacher, center), expected, rtol=1e-5)


def test_dino_center_matches_reference_and_has_no_gradient():
  center = jnp.asarray(_CENTER, jnp.float32)
  teacher = jnp.asarray(_TEACHER, jnp.float32)
  for m in (0.9, 0.0, 1.0):
    np.testing.assert_allclose(losses.dino_center(center, teacher, momentum=m),
                               ref_dino_center(_CENTER, _TEACHER, m), rtol=1e-6, atol=1e-7)
  # By hand: a zero centre and teacher outputs of 1 everywhere -> (1 - 0.9) * 1.
  np.testing.assert_allclose(losses.dino_center(jnp.zeros(3), jnp.ones((2, 4, 3))), [0.1] * 3,
                             rtol=1e-6)
  grads = jax.grad(lambda c, t: jnp.sum(losses.dino_center(c, t)), argnums=(0, 1))(center, teacher)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grads)


# ---------------------------------------------------------------------------------------------
# MoCo v3
# ---------------------------------------------------------------------------------------------


def test_moco_v3_hand_computed_orthogonal_pairs():
  # Each query equals its key and is orthogonal to the other key (lengths differ: the loss
  # normalises): logits/tau are 1/tau on the diagonal and 0 off it, so each ctr is
  # 2 tau log(1 + e^(-1/tau)), and the loss twice that.
  q = jnp.array([[2.0, 0.0], [0.0, 0.5]])
  for tau in (0.2, 1.0):
    expected = 4 * tau * math.log(1 + math.exp(-1 / tau))
    # atol: float32's rounding of logits of size 1/tau, in log-sum-exp less the positive.
    np.testing.assert_allclose(losses.moco_v3_loss(q, q, 3 * q, q, temperature=tau), expected,
                               rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Barlow Twins
# ---------------------------------------------------------------------------------------------

# Two columns of mean 0 and biased variance 1, orthogonal to each other.
_ORTHONORMAL_COLUMNS = np.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])


def test_barlow_twins_hand_computed_correlations():
  z = _ORTHONORMAL_COLUMNS
  correlation = jax.jit(functools.partial(losses.barlow_twins_correlation, eps=0.0))
  np.testing.assert_allclose(correlation(z, z), np.eye(2), atol=1e-7)
  np.testing.assert_allclose(correlation(z, -z), -np.eye(2), atol=1e-7)
  np.testing.assert_allclose(correlation(z, z[:, ::-1]), [[0.0, 1.0], [1.0, 0.0]], atol=1e-7)
  loss = functools.partial(losses.barlow_twins_loss, lambda_offdiag=0.25, eps=0.0)
  np.testing.assert_allclose(loss(z, z), 0.0, atol=1e-7)
  np.testing.assert_allclose(loss(z, -z), 2 * 2**2, rtol=1e-6)  # (1 - (-1))^2 per dimension
  np.testing.assert_allclose(loss(z, z[:, ::-1]), 2 + 0.25 * 2, rtol=1e-6)
  # Standardised over the batch: scale and shift of either view change nothing.
  np.testing.assert_allclose(loss(3 * z + 1, z - 5), 0.0, atol=1e-6)


def test_barlow_twins_perfectly_correlated_views_have_no_on_diagonal_term():
  # z2 an increasing affine map of z1, per dimension: C_ii = 1 up to eps; C's off-diagonal
  # entries are z1's own correlations.
  terms = losses.barlow_twins_terms(_Z1, 2.0 * _Z1 + np.array([1.0, -3.0, 0.5]))
  np.testing.assert_allclose(terms["on_diagonal"], 0.0, atol=1e-8)
  np.testing.assert_allclose(terms["off_diagonal"], ref_barlow_terms(_Z1, _Z1)["off_diagonal"],
                             rtol=1e-4)
  assert float(terms["off_diagonal"]) > 0.01


def test_barlow_twins_correlation_matches_reference():
  np.testing.assert_allclose(losses.barlow_twins_correlation(_Z1, _Z2),
                             ref_barlow_correlation(_Z1, _Z2), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# SwAV
# ---------------------------------------------------------------------------------------------


def test_sinkhorn_matches_reference_and_sums():
  scores = _SCORES[0]  # (B, K) = (6, 4)
  codes = jax.jit(losses.sinkhorn)(scores)
  np.testing.assert_allclose(codes, ref_sinkhorn(scores), rtol=1e-5, atol=1e-7)
  # The last step normalises the examples: each example's codes sum to 1 exactly.
  np.testing.assert_allclose(np.sum(codes, axis=1), np.ones(6), rtol=1e-6)
  # With enough iterations the prototypes are equipartitioned too: B / K = 1.5 each.
  converged = losses.sinkhorn(scores, iterations=200)
  np.testing.assert_allclose(np.sum(converged, axis=0), np.full(4, 1.5), rtol=1e-5)
  # After 3 iterations they are not yet, so the test above tells the iteration count.
  assert np.abs(np.sum(codes, axis=0) - 1.5).max() > 1e-4


def test_sinkhorn_is_safe_from_overflow_and_has_no_gradient():
  # exp(score / eps) overflows float32 above 88 eps; the shift by the global maximum makes an
  # offset of every score change nothing. Scores on a grid of 1/256 keep 1000 + score exact in
  # float32, so only the algorithm, not the inputs' rounding, is compared.
  scores = np.round(_SCORES[1] * 256) / 256
  shifted = losses.sinkhorn(jnp.asarray(scores + 1000.0, jnp.float32))
  np.testing.assert_allclose(shifted, ref_sinkhorn(scores), rtol=1e-5, atol=1e-7)
  grad = jax.grad(lambda s: jnp.sum(losses.sinkhorn(s) * jnp.arange(4.0)))(jnp.asarray(scores))
  assert float(jnp.abs(grad).max()) == 0.0


def test_sinkhorn_underflowed_example_gets_zero_codes_not_nan():
  # Example 1 sits 200 eps below everything else: every entry of its column underflows.
  scores = np.array([[1.0, 0.9, 0.8], [-9.0, -9.0, -9.0], [0.7, 1.0, 0.6], [0.9, 0.8, 1.0]])
  codes = np.asarray(losses.sinkhorn(scores))
  assert np.all(np.isfinite(codes))
  np.testing.assert_allclose(codes[1], 0.0)
  np.testing.assert_allclose(np.sum(codes[[0, 2, 3]], axis=1), 1.0, rtol=1e-6)


def test_swav_uniform_scores_give_log_k():
  # Equal scores: the codes are uniform 1/K and so are the predictions: loss = log K.
  np.testing.assert_allclose(jax.jit(losses.swav_loss)(jnp.full((4, 6, 5), 0.3)), math.log(5),
                             rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# MAE
# ---------------------------------------------------------------------------------------------


def test_mae_hand_computed_patch():
  # Target patch [1, 3]: mean 2, unbiased variance 2, so the normalised target is
  # +-1/sqrt(2 + 1e-6); a zero prediction's squared error is 1 / (2 + 1e-6) per pixel.
  target = np.array([[[1.0, 3.0], [5.0, 5.0]]])  # (1, 2, 2); the second patch is not masked
  mask = np.array([[1.0, 0.0]])
  np.testing.assert_allclose(losses.mae_loss(np.zeros((1, 2, 2)), target, mask),
                             1 / (2 + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(losses.mae_loss(np.zeros((1, 2, 2)), target, mask,
                                             normalize_target=False), (1 + 9) / 2, rtol=1e-6)


def test_mae_unmasked_rows_count_for_nothing():
  ours = jax.jit(jax.value_and_grad(lambda p: losses.mae_loss(p, _TARGETS, _MASK)))
  value, grad = ours(jnp.asarray(_PREDICTIONS, jnp.float32))
  assert float(jnp.abs(grad[1]).max()) == 0.0  # row 1 has no masked patch
  assert float(jnp.abs(grad[0, 1]).max()) == 0.0  # nor has patch 1 of row 0
  changed = _PREDICTIONS.copy()
  changed[1] += 100.0
  np.testing.assert_allclose(ours(jnp.asarray(changed, jnp.float32))[0], value, rtol=1e-6)
  nothing, grad = jax.value_and_grad(lambda p: losses.mae_loss(p, _TARGETS, np.zeros((3, 4))))(
      jnp.asarray(_PREDICTIONS, jnp.float32))
  assert float(nothing) == 0.0 and bool(jnp.all(grad == 0.0))


# ---------------------------------------------------------------------------------------------
# dtypes, degenerate inputs, input checks
# ---------------------------------------------------------------------------------------------


def _rounded(x):
  return np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bfloat16_inputs_are_computed_in_float32():
  bf16 = functools.partial(jnp.asarray, dtype=jnp.bfloat16)

  @jax.jit
  def everything():
    return {
        "dino": losses.dino_loss(bf16(_STUDENT), bf16(_TEACHER), bf16(_CENTER)),
        "dino_center": losses.dino_center(bf16(_CENTER), bf16(_TEACHER)),
        "moco_v3": losses.moco_v3_loss(bf16(_Q1), bf16(_Q2), bf16(_K1), bf16(_K2)),
        "barlow_twins": losses.barlow_twins_loss(bf16(_Z1), bf16(_Z2)),
        "sinkhorn": losses.sinkhorn(bf16(_SCORES[0])),
        "swav": losses.swav_loss(bf16(_SCORES)),
        "mae": losses.mae_loss(bf16(_PREDICTIONS), bf16(_TARGETS), bf16(_MASK)),
    }

  got = everything()
  assert all(v.dtype == jnp.float32 for v in got.values()), {k: v.dtype for k, v in got.items()}
  # The same numbers as float32 maths on the bfloat16-rounded inputs.
  r = _rounded
  want = {
      "dino": ref_dino(r(_STUDENT), r(_TEACHER), r(_CENTER)),
      "dino_center": ref_dino_center(r(_CENTER), r(_TEACHER)),
      "moco_v3": ref_moco_v3(r(_Q1), r(_Q2), r(_K1), r(_K2)),
      "barlow_twins": ref_barlow_twins(r(_Z1), r(_Z2)),
      "sinkhorn": ref_sinkhorn(r(_SCORES[0])),
      "swav": ref_swav(r(_SCORES)),
      "mae": ref_mae(r(_PREDICTIONS), r(_TARGETS), r(_MASK)),
  }
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_degenerate_inputs_give_finite_values_and_gradients():
  # Constant embeddings (zero variance, zero norm), constant patches, equal scores.
  cases = {
      "dino": lambda x: losses.dino_loss(x[None].repeat(3, 0), x[None].repeat(2, 0), x[0]),
      "moco_v3": lambda x: losses.moco_v3_loss(x, x, x, x),
      "barlow_twins": lambda x: losses.barlow_twins_loss(x, x),
      "swav": lambda x: losses.swav_loss(x[None].repeat(3, 0)),
      "mae": lambda x: losses.mae_loss(x[None], x[None], jnp.ones((1, 4))),
  }
  values_and_grads = jax.jit(lambda x: {name: jax.value_and_grad(fn)(x) for name, fn in cases.items()})
  for fill in (0.0, 1.0):
    for name, (value, grad) in values_and_grads(jnp.full((4, 3), fill)).items():
      assert np.isfinite(float(value)), (name, fill)
      assert bool(jnp.all(jnp.isfinite(grad))), (name, fill)


_BAD_CALLS = [
    (lambda: losses.dino_loss(np.ones((3, 5)), np.ones((2, 3, 5)), np.zeros(5)), "student_logits"),
    (lambda: losses.dino_loss(np.ones((2, 3, 5)), np.ones((3, 3, 5)), np.zeros(5)),
     r"teacher_logits must be \(T, n, K\) with T <= S"),
    (lambda: losses.dino_loss(np.ones((3, 3, 5)), np.ones((2, 4, 5)), np.zeros(5)), "teacher_logits"),
    (lambda: losses.dino_loss(np.ones((1, 3, 5)), np.ones((1, 3, 5)), np.zeros(5)), "at least 2 crops"),
    (lambda: losses.dino_loss(np.ones((3, 3, 5)), np.ones((2, 3, 5)), np.zeros(4)), "center"),
    (lambda: losses.dino_loss(np.ones((3, 3, 5)), np.ones((2, 3, 5)), np.zeros(5),
                              teacher_temperature=0.0), "teacher_temperature"),
    (lambda: losses.dino_loss(np.ones((3, 3, 5)), np.ones((2, 3, 5), np.int32), np.zeros(5)),
     "teacher_logits must have a floating dtype"),
    (lambda: losses.dino_center(np.zeros(5), np.ones((2, 3, 5)), momentum=1.5), "momentum"),
    (lambda: losses.dino_center(np.zeros(4), np.ones((2, 3, 5))), "center"),
    (lambda: losses.moco_v3_loss(*[np.ones((4, 3))] * 3, np.ones((4, 2))), "q1 and k2"),
    (lambda: losses.moco_v3_loss(np.ones((4, 3), np.int32), *[np.ones((4, 3))] * 3),
     "q1 must have a floating dtype"),
    (lambda: losses.moco_v3_loss(*[np.ones((4, 3))] * 4, temperature=-1.0), "temperature"),
    (lambda: losses.barlow_twins_loss(np.ones((4, 3)), np.ones((5, 3))), "z1 and z2"),
    (lambda: losses.barlow_twins_loss(np.ones((1, 3)), np.ones((1, 3))), "at least 2 rows"),
    (lambda: losses.barlow_twins_loss(np.ones((4, 3)), np.ones((4, 3)), eps=-1.0), "eps"),
    (lambda: losses.barlow_twins_loss(np.ones((4, 3)), np.ones((4, 3)), lambda_offdiag=np.ones(2)),
     "lambda_offdiag"),
    (lambda: losses.sinkhorn(np.ones((2, 4, 3))), "scores"),
    (lambda: losses.sinkhorn(np.ones((4, 3)), iterations=0), "iterations"),
    (lambda: losses.sinkhorn(np.ones((4, 3)), epsilon=0.0), "epsilon"),
    (lambda: losses.swav_loss(np.ones((2, 4, 3)), num_assigned=3), "num_assigned"),
    (lambda: losses.swav_loss(np.ones((1, 4, 3)), num_assigned=1), "at least 2 crops"),
    (lambda: losses.swav_loss(np.ones((2, 4, 3)), temperature=0.0), "temperature"),
    (lambda: losses.mae_loss(np.ones((2, 3, 4)), np.ones((2, 3, 5)), np.ones((2, 3))),
     "predictions and target_patches"),
    (lambda: losses.mae_loss(np.ones((2, 3, 4)), np.ones((2, 3, 4)), np.ones((2, 4))), "mask"),
    (lambda: losses.mae_loss(np.ones((2, 3, 1)), np.ones((2, 3, 1)), np.ones((2, 3))),
     "normalize_target"),
    (lambda: losses.mae_loss(np.ones((2, 3)), np.ones((2, 3)), np.ones((2,))), "predictions"),
]


@pytest.mark.parametrize("call,message", _BAD_CALLS)
def test_bad_inputs_raise_value_error_naming_the_argument(call, message):
  with pytest.raises(ValueError, match=message):
    call()
