"""`ssljax bench step`: the real train step of every image objective on synthetic RGB batches.

It is also the test that colour augmentations trace inside the trainer's shard_map on 3-channel
images (mnist5k, the default dataset, has one channel, where colour jitter reduces to
brightness and contrast).
"""

import numpy as np
import pytest

from ssljax.bench import throughput
from ssljax.table import load_config
from ssljax.train import checks

OBJECTIVES = ("simclr", "byol", "vicreg", "rotation", "patch_placement", "supervised")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_step_runs_on_rgb_images_on_8_devices(objective):
  config = load_config(objective, "smoke")
  config.data.name = "cifar10"  # 32x32x3 synthetic images: nothing is read from disk
  result = throughput.measure(config, steps=1, warmup=1)
  assert result["device_count"] == 8
  assert result["input_shape"] == [32, 32, 3]
  assert result["step_seconds"] > 0
  assert result["unit"] == "images"
  assert result["per_second"] == pytest.approx(config.train.batch_size / result["step_seconds"])
  assert "ms/step" in throughput.format_result(result)


def test_synthetic_batch_shapes():
  config = load_config("simclr", "smoke")
  batch = throughput.synthetic_batch(config, 4)
  assert batch["image"].shape == (4, 28, 28, 1) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (4,) and batch["label"].max() < 10
  config.data.name, config.data.image_size = "imagenet2012", 64
  assert throughput.synthetic_batch(config, 2)["image"].shape == (2, 64, 64, 3)


def test_unknown_dataset_and_varying_size_are_named():
  config = load_config("simclr", "smoke")
  config.data.name = "my_dataset"
  with pytest.raises(ValueError, match="my_dataset"):
    throughput.synthetic_batch(config, 2)
  config.data.name = "imagenet2012"
  with pytest.raises(ValueError, match="image_size"):
    throughput.synthetic_batch(config, 2)


def test_batch_not_divisible_by_devices_is_a_config_error():
  config = load_config("simclr", "smoke")
  config.train.batch_size = 12  # 8 fake devices
  with pytest.raises(checks.ConfigError, match="batch"):
    throughput.measure(config, steps=1)
