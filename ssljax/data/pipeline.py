"""Grain input pipelines: a checkpointable training iterator and padded eval batches.

Training order per process:

  source -> strided shard by process -> shuffle(seed) -> map -> batch -> repeat

Batching happens before `repeat`, so an epoch is exactly
`(len(source) // shard_count) // batch_size` batches of one fresh permutation
(grain reseeds the shuffle each epoch); every process gets the same number of
examples, hence the same number of steps, which multi-host training needs.
"""

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np

_BYTES_STATE = "__bytes_b64__"


def _to_train_example(record: dict[str, Any]) -> dict[str, np.ndarray]:
  return {
      "image": np.asarray(record["image"], dtype=np.uint8),
      "label": np.asarray(record["label"], dtype=np.int32),
  }


def resize_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W, C) uint8 -> (size, size, C): shorter side scaled to `size` (bicubic), centre crop.

  Datasets whose images differ in size (ImageNet) need one shape before batching; the random
  crops of the augmentations then happen on the device.
  """
  from PIL import Image  # only datasets with variable image sizes need it

  height, width = image.shape[:2]
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  resized = np.asarray(pil.resize((new_w, new_h), Image.BICUBIC)).reshape(new_h, new_w, -1)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top : top + size, left : left + size]


def _shard(ds: grain.MapDataset, shard_index: int, shard_count: int) -> grain.MapDataset:
  """Every shard_count-th example starting at shard_index, equal sizes for all shards.

  Strided rather than contiguous because the bundled datasets are stored
  sorted by class: a contiguous block would give a host only a few classes.
  The last len % shard_count examples are dropped so all hosts step together.
  """
  per_shard = len(ds) // shard_count
  return ds[shard_index:per_shard * shard_count:shard_count]


def _allow_unparsed_absl_flags() -> None:
  """Lets grain worker processes start outside absl.app.run.

  grain 0.2.18 reads an absl flag when starting workers and raises
  UnparsedFlagAccessError if flags were never parsed (google/grain#1355).
  Marking them parsed keeps every flag at its default.
  """
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def train_iterator(
    source: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_epochs: int | None = None,
    worker_count: int = 0,
    prefetch: int = 8,
    read_threads: int = 4,
    image_size: int | None = None,
) -> grain.DatasetIterator:
  """A checkpointable iterator of per-process training batches.

  Args:
    source: random-access records {"image", "label"} (e.g. from `load`).
    batch_size: examples per batch on this process (global batch / process_count).
    seed: shuffle seed; the same seed gives the same batches on every run.
    shuffle: reshuffle every epoch; False keeps stored order.
    drop_remainder: drop each epoch's last incomplete batch (keeps shapes static).
    shard_index, shard_count: which slice of the data this process reads;
      default jax.process_index() and jax.process_count().
    num_epochs: passes over the data; None repeats forever.
    worker_count: grain worker processes (0 reads in this process with threads).
    prefetch: batches read ahead (per worker when worker_count > 0).
    read_threads: threads reading records in each process.
    image_size: resize (shorter side) and centre-crop every image to this square size on
      the host; None keeps the stored size (every image must then have the same shape).

  Returns:
    An iterator of {"image": uint8 (batch_size, H, W, C), "label": int32
    (batch_size,)} with get_state()/set_state() for checkpointing.
  """
  if (shard_index is None) != (shard_count is None):
    raise ValueError("give both shard_index and shard_count, or neither")
  if shard_index is None:
    shard_index, shard_count = jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} not in [0, {shard_count})")

  ds = _shard(grain.MapDataset.source(source), shard_index, shard_count)
  if drop_remainder and len(ds) < batch_size:
    raise ValueError(f"a shard has {len(ds)} examples, fewer than batch_size={batch_size}")
  if shuffle:
    ds = ds.seed(seed).shuffle()
  ds = ds.map(_to_train_example)
  if image_size is not None:
    ds = ds.map(lambda ex: {**ex, "image": resize_and_center_crop(ex["image"], image_size)})
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.repeat(num_epochs)  # reseeds the shuffle each epoch

  iter_ds = ds.to_iter_dataset(
      grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
  if worker_count > 0:
    _allow_unparsed_absl_flags()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=prefetch))
  return iter(iter_ds)


def iterator_state(it: grain.DatasetIterator) -> dict[str, Any]:
  """The iterator's position as a JSON-serialisable dict (for ocp.args.JsonSave).

  grain's dataset iterators report plain dicts of ints and lists; a bytes state
  (grain's older DataLoader) is wrapped as base64 text.
  """
  state = it.get_state()
  if isinstance(state, bytes):
    return {_BYTES_STATE: base64.b64encode(state).decode("ascii")}
  if json.loads(json.dumps(state)) != state:
    raise TypeError(f"iterator state does not survive JSON: {state!r}")
  return state


def restore_iterator_state(it: grain.DatasetIterator, state: dict[str, Any]) -> None:
  """Moves a fresh iterator (built with the same arguments) to a saved position."""
  if _BYTES_STATE in state:
    state = base64.b64decode(state[_BYTES_STATE])
  it.set_state(state)


def eval_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches over a whole array; the last one is zero-padded.

  Every batch has the same shape, so a jitted feature extractor compiles once;
  `mask` marks the real examples.

  Yields:
    {"image": (batch_size, ...), "label": (batch_size,), "mask": bool (batch_size,)}.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if len(images) != len(labels):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  for start in range(0, len(images), batch_size):
    image = images[start:start + batch_size]
    label = labels[start:start + batch_size]
    real = len(image)
    pad = batch_size - real
    yield {
        "image": np.concatenate([image, np.zeros((pad,) + image.shape[1:], image.dtype)]),
        "label": np.concatenate([label, np.zeros((pad,), label.dtype)]),
        "mask": np.arange(batch_size) < real,
    }
