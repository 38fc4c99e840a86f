"""Random-access data sources: bundled datasets built on demand, public ones read if prepared.

Every dataset is read with TFDS's ArrayRecord data source (random access, what
grain needs). Bundled datasets (`mnist5k`, `digits`) are built offline into the
data dir the first time they are asked for. Public TFDS datasets (`cifar10`,
`imagenet2012`, ...) are never downloaded here: they must have been prepared in
ArrayRecord format beforehand, on a machine with internet, e.g.

  tfds build cifar10 --file_format=array_record --data_dir=DATA_DIR

Public image datasets store PNG/JPEG bytes; TFDS decodes them with OpenCV or
Pillow (no TensorFlow needed for reading, only for preparing).
"""

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from ssljax.data.bundled import BUNDLED_BUILDERS
from ssljax.errors import UserError

DATA_DIR_ENV = "SSLJAX_DATA_DIR"


class DatasetNotAvailableError(UserError, FileNotFoundError, RuntimeError):
  """A dataset is unknown, not prepared, or not stored as ArrayRecord."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and a pipeline need to know about a dataset of any modality.

  features: every stored feature's name -> (shape, dtype name); shape entries are None where
    examples vary (image sizes, text lengths).
  num_examples: examples per split, e.g. {"train": 3500, "validation": 500, "test": 1000}.
  label_key / num_classes / label_names: the ClassLabel feature that `label` stands for
    (supervised_keys' second entry, else "label" or "topic"), None when there is none.
  image_shape: (H, W, C) of an image dataset's images (grayscale gains C = 1), else None.
  """

  name: str
  features: dict[str, tuple[tuple[int | None, ...], str]]
  num_examples: dict[str, int]
  label_key: str | None = None
  num_classes: int | None = None
  label_names: tuple[str, ...] | None = None
  image_shape: tuple[int | None, ...] | None = None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """`data_dir`, else $SSLJAX_DATA_DIR, else TFDS's default (~/tensorflow_datasets)."""
  if data_dir is not None:
    return os.fspath(data_dir)
  if os.environ.get(DATA_DIR_ENV):
    return os.environ[DATA_DIR_ENV]
  # Read the TFDS variable at call time too: tfds fixes DATA_DIR at import.
  return os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR


def _how_to_prepare(name: str, data_dir: str) -> str:
  return (
      f"Prepare it once on a machine with internet access, then copy the "
      f"directory here: `pip install tensorflow tensorflow-datasets` and "
      f"`tfds build {name} --file_format=array_record --data_dir={data_dir}`, "
      f"or in Python: tfds.builder({name!r}, data_dir={data_dir!r}, "
      f"file_format='array_record').download_and_prepare(). Datasets with "
      f"manual downloads (e.g. imagenet2012) also need --manual_dir. "
      f"ssljax never downloads datasets at run time.")


def _build_bundled(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  builder = BUNDLED_BUILDERS[name](data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    try:
      builder.download_and_prepare(
          file_format="array_record",
          # Bundled builders read package files; never look for copies on GCS.
          download_config=tfds.download.DownloadConfig(try_download_gcs=False),
      )
    except Exception:
      # Another process (e.g. a pytest-xdist worker) may have finished the
      # same build first and won the final rename; that is success.
      builder = BUNDLED_BUILDERS[name](data_dir=data_dir, file_format="array_record")
      if not builder.is_prepared():
        raise
  return builder


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  # TFDS logs a warning of its own for a dataset that is not prepared; the error raised then
  # says the same and how to prepare it, in the one line the command line prints.
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    return builder.is_prepared()
  finally:
    absl_logger.setLevel(level)


def _prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of a prepared ArrayRecord dataset, or DatasetNotAvailableError."""
  from ssljax.data.config_sources import OWN_FORMATS  # imported here: it imports this module

  if name in OWN_FORMATS:
    raise DatasetNotAvailableError(
        f"{name!r} names your own files (config.data.path), which `data.open_split(config.data, split)` "
        "reads; this reader takes TFDS datasets only, so this objective or command cannot read them")
  if name in BUNDLED_BUILDERS:
    return _build_bundled(name, data_dir)
  try:
    # Finds registered builder code or, failing that, a prepared directory
    # (so datasets whose builder code needs TensorFlow still load).
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotAvailableError(
        f"Dataset {name!r} is neither bundled with ssljax "
        f"({', '.join(sorted(BUNDLED_BUILDERS))}) nor a TFDS dataset prepared "
        f"in data_dir={data_dir!r} ({type(e).__name__}). "
        + _how_to_prepare(name, data_dir)) from None
  if not _is_prepared(builder):
    raise DatasetNotAvailableError(
        f"Dataset {name!r} is not prepared in data_dir={data_dir!r} "
        f"(looked for {builder.data_dir}). " + _how_to_prepare(name, data_dir))
  file_format = builder.info.file_format
  if file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DatasetNotAvailableError(
        f"Dataset {name!r} in data_dir={data_dir!r} is stored as "
        f"{getattr(file_format, 'value', file_format)}, but random access needs "
        f"ArrayRecord. Rebuild it: " + _how_to_prepare(name, data_dir))
  return builder


def _image_label_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str] | None:
  """The (image, label) feature names of an image-classification dataset, else None."""
  features = builder.info.features
  keys = builder.info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    image_key, label_key = keys
  else:
    image_key, label_key = "image", "label"
  if image_key not in features or label_key not in features:
    return None
  image = features[image_key]
  is_image = isinstance(image, tfds.features.Image) or (
      isinstance(image, tfds.features.Tensor) and len(image.shape) in (2, 3))
  return (image_key, label_key) if is_image else None


class ImageLabelSource:
  """Random-access view that turns any image record into {"image", "label"}.

  Records become {"image": uint8 (H, W, C), "label": int}; grayscale (H, W)
  gains a channel axis, other features (ids, file names) are dropped. Pickles
  with its TFDS source, so grain worker processes can read it.
  """

  def __init__(self, source: Sequence[Any], image_key: str, label_key: str):
    self._source = source
    self._image_key = image_key
    self._label_key = label_key

  def __len__(self) -> int:
    return len(self._source)

  def _normalise(self, record: dict[str, Any]) -> dict[str, Any]:
    image = np.asarray(record[self._image_key], dtype=np.uint8)
    if image.ndim == 2:
      image = image[..., None]  # (H, W) -> (H, W, 1)
    return {"image": image, "label": int(record[self._label_key])}

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._normalise(self._source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    # ArrayRecord reads a list of keys in one call, much faster than a loop.
    return [self._normalise(r) for r in self._source.__getitems__(list(indices))]

  def __repr__(self) -> str:
    return f"ImageLabelSource({self._source!r})"


def load(name: str, split: str, *, data_dir: str | os.PathLike | None = None):
  """Random-access data source for one split of a dataset.

  Bundled datasets are built offline on first use. Public TFDS datasets must
  already be prepared as ArrayRecord in `data_dir`; nothing is downloaded.

  Args:
    name: "mnist5k", "digits", or a TFDS name such as "cifar10".
    split: a TFDS split, e.g. "train", "test", "train[:10%]".
    data_dir: TFDS data dir; default $SSLJAX_DATA_DIR, else ~/tensorflow_datasets.

  Returns:
    A sequence (len, [i], __getitems__) of records. For image-classification
    datasets each record is {"image": uint8 (H, W, C), "label": int}; other
    datasets (text) return TFDS's records unchanged (the family's record
    transform turns them into examples).

  Raises:
    DatasetNotAvailableError: the dataset is unknown, not prepared, or not ArrayRecord.
  """
  data_dir = resolve_data_dir(data_dir)
  builder = _prepared_builder(name, data_dir)
  source = builder.as_data_source(split=split)
  keys = _image_label_keys(builder)
  return source if keys is None else ImageLabelSource(source, *keys)


def load_numpy(
    name: str, split: str, *, data_dir: str | os.PathLike | None = None,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
  """A whole image split in memory, in stored order (for evaluation of small sets).

  Returns:
    images: (N, H, W, C) uint8; labels: (N,) int32.
  """
  source = load(name, split, data_dir=data_dir)
  if not isinstance(source, ImageLabelSource):
    raise ValueError(f"{name!r} is not an image-classification dataset")
  return _read_all(source, chunk_size, name)


def read_all(source: Sequence[Any], chunk_size: int = 4096) -> list[Any]:
  """Every record of a source, in order, read in chunks (one ArrayRecord read per chunk)."""
  if isinstance(source, list):
    return source
  records = []
  for start in range(0, len(source), chunk_size):
    ids = range(start, min(start + chunk_size, len(source)))
    records += source.__getitems__(ids) if hasattr(source, "__getitems__") else [source[i] for i in ids]
  return records


def _read_all(source: ImageLabelSource, chunk_size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
  records = read_all(source, chunk_size)
  shapes = {r["image"].shape for r in records}
  if len(shapes) > 1:
    raise ValueError(f"{name!r} images vary in size ({len(shapes)} shapes); "
                     "resize them before stacking")
  images = np.stack([r["image"] for r in records])  # N x (H, W, C) -> (N, H, W, C)
  labels = np.asarray([r["label"] for r in records], dtype=np.int32)
  return images, labels


class ArraySource:
  """Random-access {"image", "label"} records over arrays held in memory."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images[index], "label": int(self.labels[index])}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return f"ArraySource({self.images.shape}, {self.images.dtype})"


# A split whose records take at most this much host memory is read into it once.
IN_MEMORY_BYTES = 2**30


def record_bytes(record: Any) -> int:
  """Host bytes of one decoded record: its arrays' buffers and its strings' lengths."""
  if isinstance(record, dict):
    return sum(record_bytes(value) for value in record.values())
  if isinstance(record, (list, tuple)):
    return sum(record_bytes(value) for value in record)
  if isinstance(record, (bytes, str)):
    return len(record)
  return np.asarray(record).nbytes


def in_memory(source: Sequence[Any], max_bytes: int | None = None) -> Sequence[Any]:
  """The whole split in host memory when its records (judged by the first) fit in `max_bytes`,
  else `source` itself, which the input pipeline then reads record by record.

  Small datasets (mnist5k: 3 MB, bbc_news: 5 MB) are read and decoded once instead of every
  epoch: on a 2-core machine the reader threads otherwise take CPU time from the training step,
  and a corpus of millions of documents never has to fit. Images with labels become an
  `ArraySource` (one stacked array); other records a list. `max_bytes` defaults to
  IN_MEMORY_BYTES.
  """
  max_bytes = IN_MEMORY_BYTES if max_bytes is None else max_bytes
  if len(source) == 0 or isinstance(source, (list, ArraySource)):
    return source
  if record_bytes(source[0]) * len(source) > max_bytes:
    return source
  if not isinstance(source, ImageLabelSource):
    return read_all(source)
  try:
    return ArraySource(*_read_all(source, 4096, repr(source)))
  except ValueError:  # images of varying size stay on disk (the pipeline resizes them)
    return source


def _feature_specs(features) -> dict[str, tuple[tuple[int | None, ...], str]]:
  specs = {}
  for key, feature in features.items():
    shape = getattr(feature, "shape", ())
    dtype = getattr(feature, "np_dtype", None) or getattr(feature, "dtype", None)
    try:
      dtype_name = np.dtype(dtype).name
    except TypeError:  # e.g. TFDS text features' tf.string
      dtype_name = getattr(dtype, "name", str(dtype))
    specs[key] = (tuple(shape) if shape is not None else (), dtype_name)
  return specs


def _label_key(builder: tfds.core.DatasetBuilder) -> str | None:
  features = builder.info.features
  keys = builder.info.supervised_keys
  candidates = [keys[1]] if isinstance(keys, tuple) and len(keys) == 2 and isinstance(keys[1], str) else []
  candidates += ["label", "topic"]
  for key in candidates:
    if key in features and isinstance(features[key], tfds.features.ClassLabel):
      return key
  return None


def info(name: str, *, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
  """Features, split sizes, classes and (for images) the image shape of any dataset; builds
  bundled datasets if needed."""
  data_dir = resolve_data_dir(data_dir)
  builder = _prepared_builder(name, data_dir)
  features = builder.info.features
  label_key = _label_key(builder)
  label = features[label_key] if label_key else None
  image_keys = _image_label_keys(builder)
  image_shape = None
  if image_keys is not None:
    image_shape = tuple(features[image_keys[0]].shape)
    if len(image_shape) == 2:
      image_shape += (1,)  # ImageLabelSource adds the channel axis
  return DatasetInfo(
      name=name,
      features=_feature_specs(features),
      num_examples={s: int(v.num_examples) for s, v in builder.info.splits.items()},
      label_key=label_key,
      num_classes=label.num_classes if label is not None else None,
      label_names=tuple(label.names) if label is not None else None,
      image_shape=image_shape,
  )
