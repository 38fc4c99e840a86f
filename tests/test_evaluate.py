import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ssljax.evaluate import knn, linear_probe


def test_knn_hand_computed_weighted_vote():
  # Query [1, 0]: neighbours by cosine are a (s=1, class 0), b (s=0.8, class 1), c (s=0.6, class 1).
  # With k=3 and T=1 the votes are e^1 = 2.718 for class 0 and e^0.8 + e^0.6 = 4.048 for class 1,
  # so class 1 wins; with T=0.07 the single nearest neighbour dominates and class 0 wins.
  train = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])
  labels = np.array([0, 1, 1, 2])
  query = np.array([[2.0, 0.0]])
  assert knn.knn_predict(train, labels, query, num_classes=3, k=3, temperature=1.0)[0] == 1
  assert knn.knn_predict(train, labels, query, num_classes=3, k=3, temperature=0.07)[0] == 0
  assert knn.knn_predict(train, labels, np.array([[-1.0, 0.1]]), num_classes=3, k=1)[0] == 2


def test_linear_probe_separates_and_fails_on_noise():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(3, 5)) * 4
  y = rng.integers(0, 3, 300)
  x = centers[y] + rng.normal(size=(300, 5))
  assert linear_probe.accuracy(x[:200], y[:200], x[200:], y[200:], num_classes=3) > 0.95
  noise = rng.normal(size=(300, 5))
  assert linear_probe.accuracy(noise[:200], y[:200], noise[200:], y[200:], num_classes=3) < 0.6


def test_labels_per_class_subset():
  labels = np.repeat(np.arange(4), 20)
  subset = linear_probe.labels_per_class_subset(labels, 5, seed=1)
  assert np.array_equal(np.bincount(labels[subset]), [5, 5, 5, 5])
  assert not np.array_equal(subset, linear_probe.labels_per_class_subset(labels, 5, seed=2))
  with pytest.raises(ValueError, match="fewer than 30"):
    linear_probe.labels_per_class_subset(labels, 30)


def _probe_problem(seed, n=120, test=60, num_classes=4, dim=5):
  """Overlapping Gaussian classes: not separable, so the penalty decides how large W gets."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(num_classes, dim))
  y = rng.integers(0, num_classes, n + test)
  x = centers[y] + 1.5 * rng.normal(size=(n + test, dim))
  return x[:n], y[:n], x[n:], y[n:]


def _sklearn_probe(x, y, c):
  """A penalised multinomial logistic regression solved independently, by scikit-learn in float64.

  Ours minimises mean CE + l2/2 |W|^2 over N rows, sklearn C * sum CE + 1/2 |W|^2 (with an
  unpenalised intercept under lbfgs): the same minimiser for C = 1 / (N l2). With more than two
  classes and lbfgs, sklearn fits the multinomial model with one weight vector per class, as ours.
  """
  return LogisticRegression(C=c, solver="lbfgs", tol=1e-10, max_iter=10_000).fit(x, y)


def _probabilities(params, x):
  """Softmax of our probe in float64 (invariant to a shift of the bias, unlike the bias itself)."""
  logits = x @ np.asarray(params["w"], np.float64) + np.asarray(params["b"], np.float64)
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("l2", [1e-2, 1e-1])  # strong enough that the penalty shapes the fit
def test_fit_matches_sklearn_logistic_regression(l2):
  train_x, train_y, test_x, _ = _probe_problem(seed=1)
  n = len(train_x)
  train_x, test_x = linear_probe.standardise(train_x, test_x, np.ones(n))
  params = linear_probe.fit(train_x.astype(np.float32), train_y.astype(np.int32), np.ones(n, np.float32), l2,
                            num_classes=4)
  reference = _sklearn_probe(train_x, train_y, c=1.0 / (n * l2))
  for x in (train_x, test_x):
    np.testing.assert_allclose(_probabilities(params, x), reference.predict_proba(x), atol=1e-3)
  # The tolerance tells penalties apart: with half the penalty the probabilities move by far more.
  halved = _sklearn_probe(train_x, train_y, c=2.0 / (n * l2))
  assert np.abs(halved.predict_proba(test_x) - reference.predict_proba(test_x)).max() > 1e-2


def test_weighted_subset_matches_sklearn_on_the_subset():
  """0/1 example weights are fitting on the selected rows only (mean over them, penalty once)."""
  l2 = 1e-2
  train_x, train_y, test_x, test_y = _probe_problem(seed=2)
  subset = linear_probe.labels_per_class_subset(train_y, 8)
  weights = np.isin(np.arange(len(train_x)), subset).astype(np.float32)
  # Standardised with the subset's statistics, as `accuracy` does with train_weights.
  train_x, test_x = linear_probe.standardise(train_x, test_x, weights)
  params = linear_probe.fit(train_x.astype(np.float32), train_y.astype(np.int32), weights, l2, num_classes=4)
  reference = _sklearn_probe(train_x[subset], train_y[subset], c=1.0 / (len(subset) * l2))
  want = reference.predict_proba(test_x)
  np.testing.assert_allclose(_probabilities(params, test_x), want, atol=1e-3)
  # A probe that ignored the weights and fit all 120 rows would be far off.
  on_all = _sklearn_probe(train_x, train_y, c=1.0 / (len(train_x) * l2))
  assert np.abs(on_all.predict_proba(test_x) - want).max() > 1e-2

  # End to end: `accuracy` with train_weights predicts the test set as sklearn's subset probe does.
  # Probabilities within 1e-3 of sklearn's give its argmax wherever its top two are 2e-3 apart.
  top2 = np.sort(want, axis=1)[:, -2:]
  assert np.min(top2[:, 1] - top2[:, 0]) > 2e-3, "a near tie would make the predictions fragile"
  raw_train_x, raw_train_y, raw_test_x, raw_test_y = _probe_problem(seed=2)
  got = linear_probe.accuracy(raw_train_x, raw_train_y, raw_test_x, raw_test_y, num_classes=4, l2=l2,
                              train_weights=weights)
  assert got == np.mean(reference.predict(test_x) == raw_test_y)


def _knn_reference(train, labels, queries, num_classes, k, temperature):
  """Weighted kNN in float64: cosine similarity, the k most similar, exp(s / T) votes per class."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  sims = queries @ train.T  # (Q, N)
  k = min(k, len(train))
  predictions, margins = [], []
  for row in sims:
    nearest = np.argsort(-row)[:k]
    votes = np.zeros(num_classes)
    for i in nearest:
      votes[labels[i]] += np.exp(row[i] / temperature)
    ordered = np.sort(votes)
    predictions.append(np.argmax(votes))
    # Relative gap between the winner and the runner-up, and between the k-th and (k+1)-th
    # similarity: float32 and float64 agree unless one of them is a near tie.
    gap = np.inf if k == len(train) else -np.diff(np.sort(row)[::-1][k - 1 : k + 1])[0]
    margins.append(min((ordered[-1] - ordered[-2]) / ordered[-1], gap))
  return np.array(predictions), np.array(margins)


@pytest.mark.parametrize(
    "k, temperature, batch_size",
    [(8, 0.2, 16), (1000, 0.5, 1000)],  # a ragged last batch; k beyond the training set
)
def test_knn_matches_float64_reference(k, temperature, batch_size):
  rng = np.random.default_rng(3)
  num_classes = 5
  train = rng.normal(size=(200, 8))
  labels = rng.integers(0, num_classes, 200)
  # Queries near training points, so that neighbours agree more often than chance.
  queries = train[rng.integers(0, 200, 50)] + rng.normal(size=(50, 8))
  want, margins = _knn_reference(train, labels, queries, num_classes, k, temperature)
  assert margins.min() > 1e-4, "a near tie would make the float32 answer legitimately differ"
  # The reference is not a plain majority vote: the exp(s / T) weights change some answers.
  majority, _ = _knn_reference(train, labels, queries, num_classes, k, temperature=1e9)
  assert np.any(want != majority)
  if k < len(train):  # and every one of the k neighbours counts: without the k-th some change
    fewer, _ = _knn_reference(train, labels, queries, num_classes, k - 1, temperature)
    assert np.any(want != fewer)
  got = knn.knn_predict(train, labels, queries, num_classes=num_classes, k=k, temperature=temperature,
                        batch_size=batch_size)
  assert got.shape == (50,)
  np.testing.assert_array_equal(got, want)


def test_cross_validation_picks_the_penalty_that_generalises():
  rng = np.random.default_rng(2)
  candidates = (1e-4, 1e-2, 10.0)
  # Separable data: every penalty classifies the held-out folds perfectly; ties go to the strongest.
  y = np.arange(60) % 2
  separable = np.c_[y * 8.0 - 4.0, rng.normal(size=(60, 2))]
  assert linear_probe.cross_validated_l2(separable, y, np.ones(60), candidates, num_classes=2) == 10.0
  # Imbalanced classes (80/20) with one clean feature: a strong penalty leaves only the bias and
  # predicts the majority class, so cross-validation must pick a weaker one.
  y = (np.arange(100) % 5 == 0).astype(np.int32)
  signal = np.c_[y - 0.2 + 0.05 * rng.normal(size=100), rng.normal(size=(100, 2))]
  assert linear_probe.cross_validated_l2(signal, y, np.ones(100), candidates, num_classes=2) < 10.0



def test_minimise_reaches_a_quadratics_closed_form_minimum():
  """f(p) = 1/2 x'Ax - c'x over a pytree p = {"u": x[:3], "v": x[3:]}: minimum at x* = A^-1 c, where
  f = -1/2 c'A^-1 c. The eigenvalues of A lie in [0.5, 4], so the stopping rule |grad| <= 1e-5 puts x
  within 1e-5 / 0.5 = 2e-5 of x* (float32 rounding adds ~1e-6): 1e-4 is a bound, not a tuning."""
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  a = (q * np.array([0.5, 1.0, 2.0, 3.0, 4.0])) @ q.T
  c = rng.normal(size=5)

  def objective(p, a, c):
    x = jnp.concatenate([p["u"], p["v"]])
    return 0.5 * x @ a @ x - c @ x

  start = {"u": jnp.ones(3), "v": jnp.ones(2)}
  found = linear_probe.minimise(objective, start, jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32))
  want = np.linalg.solve(a, c)
  np.testing.assert_allclose(np.concatenate([found.params["u"], found.params["v"]]), want, atol=1e-4)
  assert float(found.value) == pytest.approx(-0.5 * c @ want, rel=1e-5)
  assert float(found.start_value) == pytest.approx(0.5 * np.ones(5) @ a @ np.ones(5) - c.sum(), rel=1e-6)
  assert 1 <= int(found.steps) < 500
  # max_steps bounds the iterations: one step lowers f without reaching the minimum.
  one = linear_probe.minimise(objective, start, jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32), max_steps=1)
  assert int(one.steps) == 1 and float(found.value) < float(one.value) < float(one.start_value)


def _topic_texts(seed, per_class, classes):
  """Short texts of `classes` topics: words of the topic's own list and of a shared one, so that
  the classes overlap and the penalty, not separability, decides the weights' size."""
  rng = np.random.default_rng(seed)
  topics = [["stocks", "market", "shares", "bank", "rates"], ["goal", "match", "team", "cup", "coach"],
            ["album", "film", "band", "stage", "award"]][:classes]
  shared = ["the", "said", "year", "new", "people", "week"]
  texts, labels = [], []
  for label in range(classes):
    for _ in range(per_class):
      stray = rng.choice(topics[rng.integers(classes)])  # a word of any topic
      words = list(rng.choice(topics[label], 2)) + list(rng.choice(shared, 3)) + [stray]
      texts.append(" ".join(rng.permutation(words)))
      labels.append(label)
  return texts, np.array(labels)


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("c", [1.0, 10.0])
def test_tfidf_probe_matches_sklearn_logistic_regression(classes, c):
  """The TF-IDF baseline's probe at scikit-learn's C (`tfidf.penalty`) is LogisticRegression(C).

  The probe stops at |grad| <= 1e-5 on the mean cross-entropy + l2/2 |W|^2, strongly convex in W
  with modulus >= l2 (>= 1 / (10 * 24) here; the unpenalised biases are fixed by the cross-entropy
  up to a common shift, which changes no probability), so its weights are within about
  1e-5 * 240 = 2.4e-3 of the minimiser, and as TF-IDF rows have unit norm the logits too:
  probabilities then agree within 2e-3 (a softmax's slope is at most 1/2; measured: 2e-5 at most).
  Predictions agree where sklearn's top two probabilities are further apart than twice that. Half
  the C moves the probabilities by more than 1e-2, so the test tells the conventions apart (with
  two classes, a missing factor 2 in `tfidf.penalty` is such a halving)."""
  from ssljax.evaluate import tfidf

  texts, labels = _topic_texts(seed=classes, per_class=8, classes=classes)
  held_out, held_out_labels = _topic_texts(seed=10 + classes, per_class=5, classes=classes)
  vectors = tfidf.text_tfidf(texts)
  train_x, test_x = vectors.vectors(texts), vectors.vectors(held_out)
  probe = tfidf.fit_probe(train_x, labels, c)
  reference = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(train_x, labels)

  def probabilities(x):
    logits = probe.logits(x).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

  for x in (train_x, test_x):
    np.testing.assert_allclose(probabilities(x), reference.predict_proba(x), atol=2e-3)
  want = reference.predict_proba(test_x)
  top2 = np.sort(want, axis=1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 4e-3
  assert clear.mean() > 0.8
  np.testing.assert_array_equal(probe.predict(test_x)[clear], reference.predict(test_x)[clear])
  assert np.mean(probe.predict(test_x) == held_out_labels) > 1 / classes
  # The tolerance tells C apart: at half the C scikit-learn's probabilities move by more.
  halved = LogisticRegression(C=c / 2, tol=1e-10, max_iter=10_000).fit(train_x, labels)
  assert np.abs(halved.predict_proba(test_x) - want).max() > 1e-2
