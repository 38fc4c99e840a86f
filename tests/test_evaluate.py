import numpy as np
import pytest

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


def test_weighted_subset_equals_fitting_on_the_subset():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 3, 120)
  x = rng.normal(size=(3, 4))[y] * 2 + rng.normal(size=(120, 4))
  test_x, test_y = x[:40], y[:40]
  subset = linear_probe.labels_per_class_subset(y[40:], 5)
  weights = np.isin(np.arange(80), subset)
  on_subset = linear_probe.accuracy(x[40:][subset], y[40:][subset], test_x, test_y, num_classes=3)
  weighted = linear_probe.accuracy(x[40:], y[40:], test_x, test_y, num_classes=3, train_weights=weights)
  assert on_subset == weighted


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

