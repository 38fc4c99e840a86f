"""train/optim.py: the learning-rate schedules against hand-computed values, and AdamW's keys
(b2, eps, weight decay through decay_mask) against a numpy AdamW step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax.train import optim
from ssljax.train.defaults import base_config


def _optim(**keys):
  c = base_config().optim
  c.name, c.lr, c.lr_scaling = "adamw", 1e-3, "none"
  for key, value in keys.items():
    c[key] = value
  return c


def test_linear_schedule_warms_up_over_a_fraction_then_decays_linearly_to_zero():
  lr = optim.schedule(_optim(schedule="linear", warmup_fraction=0.1), total_steps=100, global_batch=32)
  # By hand: 10 warm-up steps to 1e-3, then a straight line to 0 at step 100.
  for step, want in [(0, 0.0), (5, 5e-4), (10, 1e-3), (55, 5e-4), (91, 1e-4), (100, 0.0)]:
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-6, atol=1e-12, err_msg=f"step {step}")


def test_cosine_schedule_with_a_warmup_fraction():
  lr = optim.schedule(_optim(schedule="cosine", warmup_fraction=0.2), total_steps=50, global_batch=32)
  # 10 warm-up steps, then 1e-3 * (1 + cos(pi * (t - 10) / 40)) / 2.
  for step in (0, 4, 10, 30, 45, 50):
    want = 1e-3 * step / 10 if step < 10 else 1e-3 * (1 + np.cos(np.pi * (step - 10) / 40)) / 2
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5, atol=1e-10, err_msg=f"step {step}")


@pytest.mark.parametrize("keys, message", [
    ({"schedule": "step"}, "config.optim.schedule must be one of"),
    ({"warmup_fraction": 0.1, "warmup_steps": 5}, "not both"),
    ({"warmup_fraction": 1.5}, "warmup_fraction must be in"),
])
def test_bad_schedule_keys_are_named(keys, message):
  with pytest.raises(ValueError, match=message):
    optim.schedule(_optim(**keys), total_steps=10, global_batch=8)


def test_adamw_reads_b2_eps_and_decays_only_the_matrices():
  b1, b2, eps, wd, lr = 0.9, 0.5, 0.3, 0.1, 1e-2  # eps large enough to change the step visibly
  c = _optim(lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=wd, warmup_steps=0, schedule="linear")
  tx, schedule = optim.optimizer(c, total_steps=1000, global_batch=8)
  params = {"dense": {"kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.asarray([0.5, -1.0])},
            "embed": {"embedding": jnp.asarray([[2.0, 1.0]])}}
  grads = jax.tree.map(lambda p: 0.1 * jnp.arange(1.0, p.size + 1).reshape(p.shape), params)
  state = tx.init(params)
  rate = float(schedule(0))
  for step in range(2):  # two steps: the bias correction of the second moment differs from the first
    updates, state = tx.update(grads, state, params)
    rate = float(schedule(step))
    new = jax.tree.map(lambda p, u: p + u, params, updates)
    for path in (("dense", "kernel"), ("dense", "bias"), ("embed", "embedding")):
      p, g = np.asarray(params[path[0]][path[1]], np.float64), np.asarray(grads[path[0]][path[1]], np.float64)
      t = step + 1
      m = (1 - b1) * g * sum(b1**k for k in range(t))  # the same gradient every step
      v = (1 - b2) * g**2 * sum(b2**k for k in range(t))
      adam = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
      decay = wd * p if path == ("dense", "kernel") else 0.0  # not biases, not embeddings
      np.testing.assert_allclose(new[path[0]][path[1]], p - rate * (adam + decay), rtol=1e-5, err_msg=str(path))
    params = new
