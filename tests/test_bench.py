"""`ssljax bench`: the real train step of every objective on synthetic batches, timed and
costed (FLOPs, MFU, memory); the presets; the host input pipeline alone; and the "auto" compute
dtype.

The image-objective test is also the test that colour augmentations trace inside the trainer's
shard_map on 3-channel images (mnist5k, the default dataset, has one channel, where colour
jitter reduces to brightness and contrast); SimCLR runs that way in its tiny preset.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_cli

from ssljax.bench import flops, input_pipeline, presets, throughput
from ssljax.models import from_config
from ssljax.objectives import gpt
from ssljax.table import load_config
from ssljax.train import checks

OBJECTIVES = ("byol", "vicreg", "rotation", "patch_placement", "supervised")
UNITS = {"byol": ("views", 2), "vicreg": ("views", 2), "rotation": ("images", 1),
         "patch_placement": ("images", 1), "supervised": ("images", 1)}


def _check_common_fields(result, batch_size, units_per_example):
  """What every timed run reports, whatever the objective."""
  assert result["batch_size"] == batch_size and result["per_device_batch"] * 8 == batch_size
  assert result["dtype"] == "float32"  # "auto" on CPU
  assert 0 < result["step_seconds_min"] <= result["step_seconds"] <= result["step_seconds_max"]
  assert result["per_second"] == pytest.approx(batch_size * units_per_example / result["step_seconds"])
  # Cost analysis is of the per-device program; the step's FLOPs are all eight devices'.
  assert result["flops_per_device_step"] > 0
  assert result["flops_per_step"] == pytest.approx(8 * result["flops_per_device_step"])
  assert result["tflops_per_device"] == pytest.approx(
      result["flops_per_device_step"] / result["step_seconds"] / 1e12)
  assert result["peak_tflops"] is None and result["mfu"] is None  # a CPU has no peak in the table
  assert result["memory_source"] == "compiled.memory_analysis" and result["peak_memory_bytes"] > 0
  assert json.loads(json.dumps(result)) == result  # one JSON line


@pytest.mark.parametrize("objective", [o if o == "byol" else pytest.param(o, marks=pytest.mark.slow)
                                       for o in OBJECTIVES])
def test_step_runs_on_rgb_images_on_8_devices(objective):
  config = load_config(objective, "smoke")
  config.data.name = "cifar10"  # 32x32x3 synthetic images: nothing is read from disk
  result = throughput.measure(config, steps=1, warmup=1)
  assert result["device_count"] == 8
  assert result["input_shape"] == [32, 32, 3]
  unit, views = UNITS[objective]
  assert result["unit"] == unit and result["timed_steps"] == 1
  _check_common_fields(result, config.train.batch_size, views)
  assert result["analytic_flops_per_step"] is None  # no transformer formula for a ResNet
  assert "ms/step" in throughput.format_result(result)


# unit, units per example, and whether the transformer formula applies.
TINY = {"bert_base_tiny": ("sequences", 1, True), "simclr_resnet50_tiny": ("views", 2, False),
        "clip_base_tiny": ("pairs", 1, True), "mae_vit_b16_tiny": ("images", 1, False)}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_preset_reports_every_field(name):
  config = presets.preset_config(name)
  result = throughput.measure(config, steps=3, warmup=1, preset=name)
  unit, per_example, analytic = TINY[name]
  assert result["preset"] == name and result["unit"] == unit and result["timed_steps"] == 3
  _check_common_fields(result, 16, per_example)
  if analytic:
    # The formula counts matrix products; XLA also counts LayerNorm, softmax, GELU, the loss and
    # AdamW on each device, ~15-25% more at these widths (BERT 1.14, CLIP 1.25 measured).
    assert 1.0 < result["flops_per_step"] / result["analytic_flops_per_step"] < 1.5
  else:
    assert result["analytic_flops_per_step"] is None
  table = throughput.format_table([result])
  assert name in table and f"{unit}/s" in table and "MFU" in table


def test_fsdp_state_is_benchmarked_split():
  # bench step lays the state out as `ssljax train` does: with param_sharding="fsdp" the
  # parameters held per device shrink by the device count (the state is donated, so what XLA
  # plans for the arguments is what each device keeps between steps).
  config = presets.preset_config("gpt2_124m_tiny")
  replicated = throughput.measure(config, steps=0)
  config.train.param_sharding, config.train.fsdp_min_size = "fsdp", 1
  split = throughput.measure(config, steps=1, warmup=1)
  assert np.isfinite(split["step_seconds"])
  assert split["planned_memory_bytes"] < replicated["planned_memory_bytes"]


def test_gpt_tiny_preset_through_the_cli(tmp_path):
  """`ssljax bench step --preset` end to end on 2 devices: the JSON line, the table, bench.jsonl,
  MFU against --peak_tflops, and the transformer formula against XLA's count."""
  workdir = str(tmp_path / "bench")
  out = run_cli(["bench", "step", "--preset", "gpt2_124m_tiny", "--bench_steps", "5", "--peak_tflops", "0.5",
                 "--workdir", workdir], data_dir=str(tmp_path), devices=2)
  assert out.returncode == 0, out.stderr[-3000:]
  line = next(line for line in out.stdout.splitlines() if line.startswith("{"))
  result = json.loads(line)
  with open(os.path.join(workdir, "bench.jsonl")) as f:
    assert json.loads(f.readline()) == result
  assert "gpt2_124m_tiny" in out.stdout and "tokens/s" in out.stdout and "MFU" in out.stdout
  assert result["device_count"] == 2 and result["batch_size"] == 4 and result["timed_steps"] == 5
  assert result["unit"] == "tokens" and result["per_second"] == pytest.approx(4 * 64 / result["step_seconds"])
  assert result["mfu"] == pytest.approx(result["tflops_per_device"] / 0.5)
  assert result["mfu_analytic"] == pytest.approx(
      result["analytic_flops_per_step"] / 2 / result["step_seconds"] / 0.5e12)
  # The formula by hand: L blocks of 4d^2 + 2dm (attention, MLP) + 9d + m (biases, LayerNorms),
  # the tied d x V projection at every position, 12 L d T of attention.
  layers, d, m, vocab, length = 2, 32, 64, 384, 64
  n = layers * (4 * d * d + 2 * d * m + 9 * d + m)
  assert result["analytic_params"] == n
  assert result["analytic_flops_per_step"] == 4 * length * (6 * n + 12 * layers * d * length + 6 * d * vocab)
  # XLA counts 1.10x the formula here (the elementwise work and AdamW the formula leaves out,
  # a large share at width 32); at GPT-2 124M's shape it counts 1.014x (888.4 against 875.9
  # GFLOP for one sequence of 1024, compiled on CPU).
  assert 1.0 < result["flops_per_step"] / result["analytic_flops_per_step"] < 1.25


def test_presets_have_the_published_shapes():
  gpt2 = presets.preset_config("gpt2_124m", device_count=8)
  assert (gpt2.model.preset, gpt2.text.seq_len, gpt2.train.batch_size) == ("gpt2", 1024, 128)
  bert = presets.preset_config("bert_base", device_count=8)
  assert (bert.model.preset, bert.text.seq_len, bert.train.batch_size) == ("bert_base", 128, 2048)
  simclr = presets.preset_config("simclr_resnet50", device_count=1)
  assert (simclr.model.encoder, simclr.data.image_size, simclr.augment.crop_size) == ("resnet50", 256, 224)
  assert simclr.augment.blur_p == 0.5 and simclr.train.batch_size == 256
  clip = presets.preset_config("clip_base", device_count=1)
  assert (clip.model.vit_preset, clip.data.image_size, clip.text.seq_len) == ("vit_b16", 224, 77)
  assert presets.preset_config("gpt2_124m", per_device_batch=1, device_count=4).train.batch_size == 4
  published = {name for name in presets.PRESETS if not name.endswith("_tiny")}
  assert {"gpt2_124m", "bert_base", "simclr_resnet50", "clip_base"} <= published
  assert set(presets.PRESETS) == published | {name + "_tiny" for name in published}  # each has a tiny size
  with pytest.raises(ValueError, match="gpt2_124m_tiny"):
    presets.preset_config("gpt3")


def test_compile_only_costs_without_running():
  """`--bench_steps 0`: FLOPs and planned memory from shapes alone, no step run."""
  config = presets.preset_config("gpt2_124m_tiny")
  result = throughput.measure(config, steps=0)
  assert result["step_seconds"] is None and result["per_second"] is None and result["timed_steps"] == 0
  assert result["flops_per_step"] > 0 and result["planned_memory_bytes"] > 0
  assert result["analytic_flops_per_step"] > 0 and result["memory_source"] == "compiled.memory_analysis"
  assert "compiled in" in throughput.format_result(result)
  assert " - " in throughput.format_table([result])


def test_peak_table_and_mfu():
  assert flops.peak_tflops("cpu") is None
  assert flops.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
  assert flops.peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert flops.peak_tflops("NVIDIA H200") == 989.4
  assert flops.peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
  assert flops.peak_tflops("TPU v5 lite") == 197.0 and flops.peak_tflops("TPU v5p") == 459.0
  assert flops.peak_tflops("TPU v4") == 275.0 and flops.peak_tflops("TPU v6 lite") == 918.0
  assert flops.peak_tflops("NVIDIA L4") == 121.0 and flops.peak_tflops("NVIDIA L40S") is None  # not an L4
  assert flops.mfu(5e12, 0.5, 100.0) == pytest.approx(0.1)  # 10 TFLOP/s of 100
  assert flops.mfu(5e12, 0.5, None) is None and flops.mfu(None, 0.5, 100.0) is None


def test_bench_input_rate(data_dir):
  config = load_config("gpt", "smoke")
  config.data.data_dir = data_dir
  result = input_pipeline.measure_input(config, batches=5, warmup=1)
  assert result["unit"] == "tokens" and result["batch_size"] == config.train.batch_size
  assert result["examples_per_second"] > 0
  assert result["per_second"] == pytest.approx(result["examples_per_second"] * config.text.seq_len)
  assert "examples/s" in input_pipeline.format_input_result(result)


def test_auto_dtype_resolves_per_backend():
  assert load_config("simclr", "smoke").model.dtype == "auto"
  assert from_config.resolve_dtype("auto") == "float32"  # the tests run on CPU
  assert from_config.resolve_dtype("auto", backend="gpu") == from_config.resolve_dtype("auto", backend="tpu") == "bfloat16"
  assert from_config.resolve_dtype("bfloat16") == "bfloat16" and from_config.resolve_dtype("float32", backend="gpu") == "float32"
  with pytest.raises(ValueError, match="auto"):
    from_config.resolve_dtype("float64")
  config = load_config("gpt", "smoke")
  assert gpt.transformer_config(config, causal=True).dtype == jnp.float32
  config.model.dtype = "bfloat16"  # explicit names still win
  assert gpt.transformer_config(config, causal=True).dtype == jnp.bfloat16


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
