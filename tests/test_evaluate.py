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
