"""Grain input pipelines: a checkpointable training iterator and streamed evaluation batches.

Training order, for one example per record (images):

  source -> shuffle(seed) -> map(record_fn) -> batch -> this process's batches -> repeat

Every process shuffles the whole source with the same seed and cuts it into batches of its
per-process size b; the global batch of step s is the n consecutive batches s*n ... s*n + n - 1
(n processes), and process i reads only batch s*n + i, which lands on its devices as rows
[i*b, (i+1)*b) of the global batch. The global batches are therefore exactly those of one
process with batch n*b, in the same order, whatever the number of processes, and each record
is read by one process only. Batching happens before `repeat`, so an epoch is exactly
`len(source) // (n * b)` steps of one fresh permutation (grain reseeds the shuffle each epoch),
the same on every process, which multi-host training needs.

A stage that changes the number of examples (packing documents into fixed-length sequences)
runs on the iterator instead, after a strided shard of the documents by process:

  source -> shard -> shuffle(seed) -> map(record_fn) -> repeat -> iter_stage -> batch

Packing is sequential, so there each process packs its own documents: the global batches
differ from one process's (the same data, another order), but no process tokenises more than
its share.

Both are deterministic for a seed, and grain's iterator state (saved with every checkpoint)
covers every stage, so a resumed run sees exactly the batches of an uninterrupted one.
"""

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np

_BYTES_STATE = "__bytes_b64__"


def image_example(record: dict[str, Any], image_size: int | None = None) -> dict[str, np.ndarray]:
  """The image family's record transform: {"image": uint8 (H, W, C), "label": int32}, resized
  and centre-cropped to `image_size` when the dataset's images vary in size. Records without a
  "label" (an image folder without class folders) give examples without one."""
  image = prepare_image(record["image"], image_size)
  if "label" not in record:
    return {"image": image}
  return {"image": image, "label": np.asarray(record["label"], dtype=np.int32)}


def prepare_image(image, size: int | None) -> np.ndarray:
  """A stored image -> uint8 (H, W, C): grayscale gains a channel axis, and an image of another
  size is resized (shorter side) and centre-cropped to `size`. Every reader of images (training,
  evaluation, zero-shot classification of a user's files) goes through here."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[..., None]  # (H, W) -> (H, W, 1)
  if size is not None and image.shape[:2] != (size, size):
    image = resize_and_center_crop(image, size)
  return image


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


def _process_batches(batches: grain.MapDataset, shard_index: int, shard_count: int) -> grain.MapDataset:
  """Batches shard_index, shard_index + shard_count, ...: this process's part of each global
  batch. The slice is lazy (only these batches are ever read) and, past its end, maps into the
  next epochs of the batches, so `repeat` after it still reshuffles per epoch. Whole global
  batches only: the last len % shard_count batches of an epoch are dropped."""
  steps = len(batches) // shard_count
  return batches[shard_index:steps * shard_count:shard_count]


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
    record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = image_example,
    iter_stage: Callable[[grain.IterDataset], grain.IterDataset] | None = None,
) -> grain.DatasetIterator:
  """A checkpointable iterator of per-process training batches.

  Args:
    source: random-access records {"image", "label"} (e.g. from `load`).
    batch_size: examples per batch on this process (global batch / process_count).
    seed: shuffle seed; the same seed gives the same batches on every run.
    shuffle: reshuffle every epoch; False keeps stored order.
    drop_remainder: drop each epoch's last incomplete batch (keeps shapes static).
    shard_index, shard_count: which part of every global batch this process reads (its
      documents, with `iter_stage`); default jax.process_index() and jax.process_count().
    num_epochs: passes over the data; None repeats forever.
    worker_count: grain worker processes (0 reads in this process with threads).
    prefetch: batches read ahead (per worker when worker_count > 0).
    read_threads: threads reading records in each process.
    record_fn: record -> example of numpy arrays, on the host (decode, resize, tokenise);
      default `image_example`; None keeps the records as they are.
    iter_stage: IterDataset -> IterDataset between record_fn and batching, for stages that
      change the number of examples (packing); None for one example per record.

  Returns:
    An iterator of batches (every example leaf stacked: e.g. {"image": uint8
    (batch_size, H, W, C), "label": int32 (batch_size,)}) with get_state()/set_state().
  """
  if (shard_index is None) != (shard_count is None):
    raise ValueError("give both shard_index and shard_count, or neither")
  if shard_index is None:
    shard_index, shard_count = jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} not in [0, {shard_count})")

  ds = grain.MapDataset.source(source)
  if iter_stage is not None:
    ds = _shard(ds, shard_index, shard_count)
  global_batch = batch_size * (shard_count if iter_stage is None else 1)
  if drop_remainder and len(ds) < global_batch:
    raise ValueError(f"{len(ds)} examples are fewer than one batch of {global_batch}"
                     + (f" ({shard_count} processes x {batch_size})" if global_batch != batch_size else ""))
  if iter_stage is None and not drop_remainder and shard_count > 1:
    raise ValueError("several processes need drop_remainder=True (equal batches on every process)")
  if shuffle:
    ds = ds.seed(seed).shuffle()
  if record_fn is not None:
    ds = ds.map(record_fn)
  read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
  if iter_stage is None:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = _process_batches(ds, shard_index, shard_count)
    ds = ds.repeat(num_epochs)  # reseeds the shuffle each epoch
    iter_ds = ds.to_iter_dataset(read_options)
  else:
    iter_ds = iter_stage(ds.repeat(num_epochs).to_iter_dataset(read_options))
    iter_ds = iter_ds.batch(batch_size, drop_remainder=drop_remainder)
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
    source: Sequence[dict[str, Any]],
    batch_size: int,
    record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = image_example,
    indices: Sequence[int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-shape batches streamed over a split in stored order; the last one is zero-padded.

  Only one batch of records is read and held at a time, so a split of any size (ImageNet's)
  is evaluated with bounded host memory. Every batch has the same shape, so a jitted feature
  extractor compiles once; `mask` marks the real examples.

  Args:
    source: random-access records.
    batch_size: examples per batch.
    record_fn: record -> example, as in training (default `image_example`).
    indices: the records to read, in this order; default all of them.

  Yields:
    the example's leaves stacked to (batch_size, ...), plus "mask": bool (batch_size,).
  """
  indices = range(len(source)) if indices is None else indices
  for start in range(0, len(indices), batch_size):
    chunk = list(indices[start:start + batch_size])
    records = source.__getitems__(chunk) if hasattr(source, "__getitems__") else [source[i] for i in chunk]
    examples = [record_fn(r) if record_fn is not None else r for r in records]
    real = len(examples)
    batch = {key: np.stack([np.asarray(e[key]) for e in examples]) for key in examples[0]}
    batch = {key: _pad_rows(value, batch_size) for key, value in batch.items()}
    batch["mask"] = np.arange(batch_size) < real
    yield batch


def _pad_rows(value: np.ndarray, rows: int) -> np.ndarray:
  """(n, ...) -> (rows, ...), zero rows appended."""
  return np.concatenate([value, np.zeros((rows - len(value),) + value.shape[1:], value.dtype)])


def example_batch(
    source: Sequence[dict[str, Any]],
    record_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = image_example,
    iter_stage: Callable[[grain.IterDataset], grain.IterDataset] | None = None,
    n: int = 2,
) -> dict[str, np.ndarray]:
  """A batch of `n` examples shaped like the training batches, through the same host stages
  (for initialising a model and tracing shapes), from the source's first records."""
  it = train_iterator(source, batch_size=n, seed=0, shuffle=False, shard_index=0, shard_count=1,
                      read_threads=1, prefetch=0, record_fn=record_fn, iter_stage=iter_stage)
  return next(it)
