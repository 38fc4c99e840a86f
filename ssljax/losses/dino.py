"""DINO: self-distillation with no labels, with the teacher's centre over the global batch."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import lax

from ssljax.losses import _common
from ssljax.losses._common import AxisName
from ssljax.losses._crops import sum_over_other_crops

Array = jax.Array


def dino_loss(student_logits: Array, teacher_logits: Array, center: Array, *,
              student_temperature: float | Array = 0.1, teacher_temperature: float | Array = 0.04,
              axis_name: AxisName | None = None) -> Array:
  """Cross-entropy between the centred, sharpened teacher and the student over pairs of crops.

  Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
  arXiv:2104.14294, Section 3.1 (eqs. 1-3) and Algorithm 1. For an example with crops
  x_1..x_S, of which the first T are the global crops the teacher saw,

      P_t(x)  = softmax((g_t(x) - c) / tau_t)        the teacher, centred by c and sharpened
      P_s(x') = softmax(g_s(x') / tau_s)             the student
      H(a, b) = -sum_k a_k log b_k
      loss    = mean over pairs (t < T, s < S, s != t) and over the examples of
                H(P_t(x_t), P_s(x_s))

  Choices. Eq. (3) sums over the pairs; like the authors' code (`DINOLoss`) this is the mean
  over the T (S - 1) pairs and the batch, so the loss does not grow with the number of crops.
  A teacher crop is never paired with the student's view of the same crop (s != t), which is
  why the student's first T crops must be the teacher's T crops, in the same order. The teacher
  and the centre are constants (`lax.stop_gradient`): the teacher learns only through its
  moving average and the centre through `dino_center`. The paper's defaults are tau_s = 0.1 and
  tau_t warmed up linearly from 0.04 to 0.07 over the first 30 epochs; pass the scheduled value
  (a shape-() array is fine inside jit). In Algorithm 1 the loss of a step uses the centre from
  before that step's update: call `dino_center` after this loss, on the same teacher logits.

  Args:
    student_logits: (S, n, K) student head outputs for every crop (bfloat16 is computed in
      float32); crops of different sizes come from separate forward passes, stacked here.
    teacher_logits: (T, n, K) teacher head outputs for the first T crops, T <= S.
    center: (K,) the running centre of the teacher's outputs.
    student_temperature: tau_s > 0, a float or a shape-() array.
    teacher_temperature: tau_t > 0, a float or a shape-() array.
    axis_name: mesh axis (or tuple of axes) of a sharded batch: the mean is then over the
      global batch, the same on every device; `lax.pmean` the per-device gradients.

  Returns:
    Scalar float32 loss.
  """
  fn = "dino_loss"
  student = _common.check_features(fn, "student_logits", student_logits, ndim=3)
  teacher = _common.check_features(fn, "teacher_logits", teacher_logits, ndim=3)
  center = _common.check_features(fn, "center", center, ndim=1)
  num_student_crops, n, num_outputs = student.shape
  num_teacher_crops = teacher.shape[0]
  if teacher.shape[1:] != (n, num_outputs) or num_teacher_crops > num_student_crops:
    raise ValueError(f"{fn}: teacher_logits must be (T, n, K) with T <= S for student_logits "
                     f"(S, n, K) = {tuple(student.shape)}, got {tuple(teacher.shape)}")
  if num_student_crops < 2:
    raise ValueError(f"{fn}: student_logits needs at least 2 crops, so that every teacher crop "
                     f"has a student crop of another view, got {tuple(student.shape)}")
  if center.shape != (num_outputs,):
    raise ValueError(f"{fn}: center must have shape (K,) = ({num_outputs},), got "
                     f"{tuple(center.shape)}")
  inv_tau_student = 1.0 / _common.check_scalar(fn, "student_temperature", student_temperature,
                                               positive=True)
  inv_tau_teacher = 1.0 / _common.check_scalar(fn, "teacher_temperature", teacher_temperature,
                                               positive=True)

  teacher, center = lax.stop_gradient(teacher), lax.stop_gradient(center)
  teacher_probs = jax.nn.softmax((teacher - center) * inv_tau_teacher, axis=-1)  # (T, n, K)
  student_log_probs = jax.nn.log_softmax(student * inv_tau_student, axis=-1)  # (S, n, K)
  # Teacher crop t meets every student crop but its own.
  other_crops = sum_over_other_crops(student_log_probs, num_teacher_crops)  # (T, n, K)
  local_sum = -jnp.sum(teacher_probs * other_crops)
  num_pairs = num_teacher_crops * (num_student_crops - 1)
  count = num_pairs * n * _common.axis_size(axis_name)
  return _common.global_sum(local_sum, axis_name) / count


def dino_center(center: Array, teacher_logits: Array, *, momentum: float | Array = 0.9,
                axis_name: AxisName | None = None) -> Array:
  """The teacher's new centre, a moving average of its mean output over the global batch.

  Caron et al. 2021, arXiv:2104.14294, Section 3.1 eq. (4) and Algorithm 1:

      c <- m c + (1 - m) 1/(T B) sum_{t < T} sum_{i < B} g_t(x_i^t)

  with B the *global* batch: the devices psum their sums of teacher outputs (as the authors'
  code all-reduces its batch centre), so the centre is the same on every device and equal to
  the centre of one device that holds the whole batch. m = 0.9 in the paper. The centre is
  state, not a parameter: no gradient flows through it (`lax.stop_gradient`).

  Args:
    center: (K,) the current centre.
    teacher_logits: (T, n, K) teacher outputs of this step's T global crops (bfloat16 is
      computed in float32).
    momentum: m in [0, 1], a float or a shape-() array.
    axis_name: mesh axis (or tuple of axes) of a sharded batch, or None.

  Returns:
    (K,) float32 new centre.
  """
  fn = "dino_center"
  teacher = _common.check_features(fn, "teacher_logits", teacher_logits, ndim=3)
  center = _common.check_features(fn, "center", center, ndim=1)
  if center.shape != teacher.shape[-1:]:
    raise ValueError(f"{fn}: center must have shape (K,) = ({teacher.shape[-1]},) for "
                     f"teacher_logits {tuple(teacher.shape)}, got {tuple(center.shape)}")
  if isinstance(momentum, numbers.Number) and not 0 <= momentum <= 1:
    raise ValueError(f"{fn}: momentum must be in [0, 1], got {momentum!r}")
  momentum = _common.check_scalar(fn, "momentum", momentum)

  teacher = lax.stop_gradient(teacher)
  num_crops, n, _ = teacher.shape
  count = num_crops * n * _common.axis_size(axis_name)
  batch_center = _common.global_sum(jnp.sum(teacher, axis=(0, 1)), axis_name) / count  # (K,)
  return lax.stop_gradient(momentum * center + (1.0 - momentum) * batch_center)
