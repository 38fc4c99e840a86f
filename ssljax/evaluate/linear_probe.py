"""Linear probe: multinomial logistic regression on frozen features, trained with optax.

Features are standardised with the training set's statistics; the classifier is trained
full-batch with L-BFGS (optax.lbfgs) and an L2 penalty, a convex problem that needs no
learning-rate tuning, inside one jitted `lax.while_loop`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def standardise(train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean = train_x.mean(axis=0)
  std = train_x.std(axis=0) + 1e-6
  return (train_x - mean) / std, (test_x - mean) / std


def fit(x, y, *, num_classes: int, l2: float = 1e-3, max_steps: int = 500):
  """Weights (D, K) and bias (K,) minimising mean cross-entropy + l2/2 * |W|^2."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.int32)
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

  def objective(params):
    logits = x @ params["w"] + params["b"]  # (N, D) . (D, K) -> (N, K)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)

  @jax.jit
  def run(params):
    def step(carry):
      params, opt_state, i = carry
      value, grad = value_and_grad(params, state=opt_state)
      updates, opt_state = solver.update(grad, opt_state, params, value=value, grad=grad, value_fn=objective)
      return optax.apply_updates(params, updates), opt_state, i + 1

    def not_done(carry):
      _, opt_state, i = carry
      grad = optax.tree.get(opt_state, "grad")
      return (i == 0) | ((i < max_steps) & (optax.tree.norm(grad) > 1e-5))

    params, _, _ = jax.lax.while_loop(not_done, step, (params, solver.init(params), 0))
    return params

  return run(params)


def accuracy(train_x, train_y, test_x, test_y, *, num_classes: int, l2: float = 1e-3, max_steps: int = 500) -> float:
  """Test top-1 accuracy of a linear classifier fit on (train_x, train_y)."""
  train_x, test_x = standardise(np.asarray(train_x, np.float32), np.asarray(test_x, np.float32))
  params = fit(train_x, train_y, num_classes=num_classes, l2=l2, max_steps=max_steps)
  predictions = np.asarray(jnp.argmax(jnp.asarray(test_x) @ params["w"] + params["b"], axis=-1))
  return float(np.mean(predictions == np.asarray(test_y)))


def labels_per_class_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
  """Indices of `per_class` randomly chosen examples of every class (sorted)."""
  rng = np.random.default_rng(seed)
  chosen = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise ValueError(f"class {c} has {len(members)} examples, fewer than {per_class} requested")
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))
