"""Linear probe: multinomial logistic regression on frozen features, trained with optax.

Features are standardised with the training set's statistics; the classifier is trained
full-batch with L-BFGS (optax.lbfgs) and an L2 penalty, a convex problem that needs no
learning-rate tuning, inside one jitted `lax.while_loop` (`minimise`, the package's one
minimiser of a smooth objective over a parameter pytree: fine-tuning's LP-FT head fit and the
TF-IDF baselines use it too). The penalty is chosen by cross-validation on the training labels,
as the SimCLR paper does on a validation split (arXiv 2002.05709, appendix B.5), so every
representation gets its own best regulariser.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def standardise(train_x: np.ndarray, test_x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both sets scaled with the mean and std of the (weighted) training features."""
  w = weights[:, None] / weights.sum()
  mean = np.sum(w * train_x, axis=0)
  std = np.sqrt(np.sum(w * np.square(train_x - mean), axis=0)) + 1e-6
  return (train_x - mean) / std, (test_x - mean) / std


class Minimum(NamedTuple):
  """What `minimise` found: the parameters, the objective there and at the start, and the number
  of L-BFGS iterations taken."""

  params: Any
  value: jax.Array
  start_value: jax.Array
  steps: jax.Array


@functools.partial(jax.jit, static_argnums=0, static_argnames=("max_steps",))
def minimise(objective: Callable[..., jax.Array], params, *data, max_steps: int = 500,
             tolerance: float = 1e-5) -> Minimum:
  """Minimises a smooth `objective(params, *data) -> scalar` over a parameter pytree by
  full-batch L-BFGS (optax.lbfgs, a zoom line search: no learning rate to tune), in one jitted
  `lax.while_loop`: at least one iteration, at most `max_steps`, stopping once the gradient's norm
  is at most `tolerance`.

  `data` are traced arguments (the features, labels, frozen states), `objective` a static one:
  the same function object reuses the compilation.
  """

  def value_fn(p):
    return objective(p, *data)

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(value_fn)

  def step(carry):
    params, opt_state, i = carry
    value, grad = value_and_grad(params, state=opt_state)
    updates, opt_state = solver.update(grad, opt_state, params, value=value, grad=grad, value_fn=value_fn)
    return optax.apply_updates(params, updates), opt_state, i + 1

  def not_done(carry):
    _, opt_state, i = carry
    grad = optax.tree.get(opt_state, "grad")
    return (i == 0) | ((i < max_steps) & (optax.tree.norm(grad) > tolerance))

  start_value = value_fn(params)
  params, opt_state, steps = jax.lax.while_loop(not_done, step, (params, solver.init(params), 0))
  return Minimum(params, optax.tree.get(opt_state, "value"), start_value, steps)


def softmax_objective(params, x, y, weights, l2):
  """The weighted mean cross-entropy of the linear classifier x @ w + b, plus l2/2 * |w|^2."""
  logits = x @ params["w"] + params["b"]  # (N, D) . (D, K) -> (N, K)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(weights * ce) / jnp.sum(weights) + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))


@functools.partial(jax.jit, static_argnames=("num_classes", "max_steps"))
def fit(x, y, weights, l2, *, num_classes: int, max_steps: int = 500):
  """Weights (D, K) and bias (K,) minimising the weighted mean cross-entropy + l2/2 * |W|^2
  (`softmax_objective`, by `minimise`).

  `x` is (N, D) float32, dense or a `jax.experimental.sparse.BCOO` matrix (TF-IDF features).
  Example weights (0 or 1) select a subset without changing shapes, so the probe with all
  labels and the probe with a few labels per class share one compilation.
  """
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  return minimise(softmax_objective, params, x, y, weights, l2, max_steps=max_steps).params


def _predict(params, x):
  return np.asarray(jnp.argmax(jnp.asarray(x) @ params["w"] + params["b"], axis=-1))


def cross_validated_l2(x, y, weights, candidates, *, num_classes: int, max_steps: int = 500,
                       folds: int = 3, seed: int = 0) -> float:
  """The L2 strength with the best `folds`-fold cross-validated accuracy on the training
  examples (those with weight > 0); ties go to the stronger penalty. The test set is never seen.
  """
  members = np.flatnonzero(weights > 0)
  fold_of = np.full(len(x), -1)
  fold_of[np.random.default_rng(seed).permutation(members)] = np.arange(len(members)) % folds
  best, best_correct = None, -1
  for l2 in sorted(candidates, reverse=True):
    correct = 0
    for fold in range(folds):
      held_out = fold_of == fold
      params = fit(x, y, weights * ~held_out, l2, num_classes=num_classes, max_steps=max_steps)
      correct += int(np.sum(_predict(params, x[held_out]) == y[held_out]))
    if correct > best_correct:
      best, best_correct = float(l2), correct
  return best


def accuracy(train_x, train_y, test_x, test_y, *, num_classes: int, l2=1e-3, max_steps: int = 500,
             train_weights: np.ndarray | None = None) -> float:
  """Test top-1 accuracy of a linear classifier fit on (train_x, train_y).

  `l2` is a penalty strength, or a sequence of candidates to choose from by cross-validation on
  the training examples. `train_weights` (N,) of 0/1 restricts training to a subset, e.g. a few
  labels per class.
  """
  train_x, test_x = np.asarray(train_x, np.float32), np.asarray(test_x, np.float32)
  train_y = np.asarray(train_y, np.int32)
  weights = np.ones(len(train_x), np.float32) if train_weights is None else np.asarray(train_weights, np.float32)
  # Fit on the selected rows only: 100 of 4,000 rows make each L-BFGS iteration 40x cheaper,
  # which outweighs compiling `fit` for the smaller shape (the result is the same).
  selected = weights > 0
  train_x, train_y, weights = train_x[selected], train_y[selected], weights[selected]
  train_x, test_x = standardise(train_x, test_x, weights)
  if np.ndim(l2):
    l2 = cross_validated_l2(train_x, train_y, weights, l2, num_classes=num_classes, max_steps=max_steps)
  params = fit(train_x, train_y, weights, l2, num_classes=num_classes, max_steps=max_steps)
  return float(np.mean(_predict(params, test_x) == np.asarray(test_y)))


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

