"""The CLI end to end on the smoke config: train, eval, plot, resume after SIGKILL, bad configs."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from ssljax.train import checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "simclr.py") + ":smoke"


def _env(data_dir, devices=2):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["SSLJAX_DATA_DIR"] = data_dir
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _ssljax(args, data_dir, devices=2, **kwargs):
  return subprocess.run([sys.executable, "-m", "ssljax.cli", *args], env=_env(data_dir, devices), cwd=REPO,
                        capture_output=True, text=True, timeout=600, **kwargs)


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f)}


@pytest.mark.slow  # the README's blocks run train, eval --split validation and plot in test_readme: ~75 s
def test_train_eval_plot_smoke(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  result = _ssljax(["train", "--config", SMOKE, "--workdir", workdir, "--noprogress"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Linear probe, 10 labels per class" in result.stdout
  report = json.load(open(os.path.join(workdir, "eval.json")))
  assert report["split"] == "test" and report["dataset"] == "mnist5k" and report["objective"] == "simclr"
  assert set(report) == {"objective", "dataset", "split", "linear_probe", "few_label_probe", "knn"}
  encoders = {"simclr", "random_init", "raw_pixels"}
  for name in ("linear_probe", "knn"):
    assert set(report[name]["accuracy"]) == encoders
    # 4 steps teach the encoder little, but every probe beats twice the chance of 10 digits,
    # and the raw pixels' (no training at all) are known to be near 0.9 on mnist5k.
    assert all(v > 0.2 for v in report[name]["accuracy"].values()), report[name]
    assert report[name]["accuracy"]["raw_pixels"] > 0.85, report[name]
  few = report["few_label_probe"]
  assert few["labels_per_class"] == 10 and set(few["accuracy"]) == encoders
  for row in few["accuracy"].values():
    assert len(row["draws"]) == 2 and row["mean"] == pytest.approx(np.mean(row["draws"]))
  assert sorted(_losses(workdir)) == [1, 2, 3, 4]
  result = _ssljax(["plot", "--workdir", workdir], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.getsize(os.path.join(workdir, "plots", "loss.png")) > 1000
  assert os.path.getsize(os.path.join(workdir, "plots", "learning_rate.png")) > 1000
  result = _ssljax(["eval", "--workdir", workdir], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.load(open(os.path.join(workdir, "eval.json"))) == report  # evaluation is deterministic
  result = _ssljax(["eval", "--workdir", workdir, "--split", "validation"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  validation = json.load(open(os.path.join(workdir, "eval_validation.json")))
  assert validation["split"] == "validation" and validation["knn"] != report["knn"]


@pytest.mark.slow  # a minute each; the step's 8 == 1 runs in-process in test_train_step and the objectives' tests
@pytest.mark.parametrize("variant", ["smoke", "mnist5k"])
def test_same_losses_on_one_and_eight_devices(tmp_path, data_dir, variant):
  """`ssljax train` with real augmentation logs the same losses on 1 and on 8 devices: every
  example's random views come from its global index, not from the device it lands on."""
  extra = [] if variant == "smoke" else ["--config.train.steps=3", "--config.train.batch_size=32",
                                         "--config.train.log_every=1", "--config.evals.knn.every=0"]
  config = os.path.join(REPO, "configs", "simclr.py") + ":" + variant
  losses = {}
  for devices in (1, 8):
    workdir = str(tmp_path / f"run{devices}")
    result = _ssljax(["train", "--config", config, "--workdir", workdir, "--noprogress",
                      "--config.train.evaluate=False", *extra], data_dir, devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    losses[devices] = _losses(workdir)
  assert sorted(losses[1]) == sorted(losses[8]) and len(losses[1]) >= 3
  for step in losses[1]:
    assert losses[8][step] == pytest.approx(losses[1][step], rel=1e-5), (step, losses)


# A minute each; SIGKILL and resume are test_reliability's (bit for bit), the text iterator's resume
# is test_text_data's.
@pytest.mark.slow
@pytest.mark.parametrize("config", [SMOKE, os.path.join(REPO, "configs", "gpt.py") + ":smoke"], ids=["simclr", "gpt"])
def test_sigkill_and_resume_gives_identical_losses(tmp_path, data_dir, config):
  """Killed at any moment, a run restarts from its last checkpoint and logs exactly the losses
  of an uninterrupted run: same parameters, same data order (the grain iterator state, packing
  included, is saved with the model), same random keys."""
  steps = 60
  common = ["--config", config, "--noprogress", f"--config.train.steps={steps}", "--config.train.checkpoint_every=3",
            "--config.train.evaluate=False"]
  reference = str(tmp_path / "reference")
  assert _ssljax(["train", "--workdir", reference, *common], data_dir).returncode == 0

  interrupted = str(tmp_path / "interrupted")
  process = subprocess.Popen([sys.executable, "-m", "ssljax.cli", "train", "--workdir", interrupted, *common],
                             env=_env(data_dir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = os.path.join(interrupted, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(metrics) and len(open(metrics).readlines()) >= 10:
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  killed_at = max(_losses(interrupted))
  assert killed_at < steps

  resumed = _ssljax(["train", "--workdir", interrupted, *common], data_dir)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert _losses(interrupted) == _losses(reference)


def _parse(overrides):
  """The config exactly as the CLI's flag parsing builds it from these overrides."""
  argv = ["prog", "--config", SMOKE, *overrides]
  fv = flags.FlagValues()
  # config_flags finds override flags in sys.argv unless it is given the argv explicitly.
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def test_overrides_apply():
  config = _parse(["--config.train.steps=7", "--config.loss.temperature=0.3"])
  assert config.train.steps == 7 and config.loss.temperature == 0.3


def test_unknown_key_is_named():
  with pytest.raises(Exception, match="stepz") as error:
    _parse(["--config.train.stepz=3"])
  assert "steps" in str(error.value)  # it suggests the key that exists


def test_wrong_type_is_named():
  with pytest.raises(Exception, match="config.train.steps") as error:
    _parse(["--config.train.steps=many"])
  assert "many" in str(error.value)


def test_batch_not_divisible_by_devices():
  config = _parse(["--config.train.batch_size=12"])
  with pytest.raises(checks.ConfigError, match="batch_size=12 is not divisible by the 8 devices"):
    checks.check(config)


@pytest.mark.parametrize("override, message", [
    ("--config.objective=simclrr", "simclrr"),
    ("--config.train.steps=0", "config.train.steps"),
    ("--config.loss.temperature=-1", "config.loss.temperature"),
    ("--config.optim.lr=0", "config.optim.lr"),
])
def test_impossible_values_are_named(override, message):
  with pytest.raises(checks.ConfigError, match=message):
    checks.check(_parse([override]))


@pytest.mark.parametrize("override, message", [
    ("--config.train.stepz=3", "no such key: stepz"),
    ("--config.train.steps=many", "--config.train.steps=many"),
])
def test_cli_reports_bad_override_in_one_line(tmp_path, data_dir, override, message):
  result = _ssljax(["train", "--config", SMOKE, "--workdir", str(tmp_path), override], data_dir)
  assert result.returncode != 0
  assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_reports_bad_config_without_traceback(tmp_path, data_dir):
  result = _ssljax(["train", "--config", SMOKE, "--workdir", str(tmp_path), "--config.train.batch_size=3"], data_dir)
  assert result.returncode != 0
  assert "batch_size=3 is not divisible by the 2 devices" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


@pytest.mark.parametrize("environ, libc, thp, expected", [
    ({}, ("glibc", "2.36"), "madvise", "glibc.malloc.hugetlb=1"),
    ({}, ("glibc", "2.35"), "always", "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, ("glibc", "2.39"), "madvise",
     "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),  # the user's tunables are kept
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, ("glibc", "2.36"), "madvise", None),  # the user's choice
    ({"SSLJAX_HUGE_PAGES": "0"}, ("glibc", "2.36"), "madvise", None),
    ({}, ("glibc", "2.34"), "madvise", None),  # the tunable is new in glibc 2.35
    ({}, ("glibc", "2.36"), "never", None),
    ({}, ("glibc", "2.36"), None, None),
    ({}, ("", ""), "madvise", None),  # musl and others: platform.libc_ver() names no glibc
])
def test_huge_pages_tunables(environ, libc, thp, expected):
  from ssljax import cli

  assert cli.huge_pages_tunables(environ, libc, thp) == expected


def test_command_restarts_once_with_huge_pages():
  """The restart replaces the process (same pid, its code runs to the end once) and passes the
  arguments through; the tunable is set where this machine's glibc and kernel allow it."""
  import platform

  from ssljax import cli

  code = ("import os, sys; from ssljax import cli; cli._restart_with_huge_pages(); "
          "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SSLJAX_HUGE_PAGES")}
  process = subprocess.Popen([sys.executable, "-c", code, "--flag", "a b"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 0
  expected = cli.huge_pages_tunables({}, platform.libc_ver(), cli._transparent_huge_pages_mode())
  assert out.splitlines() == [f"{process.pid} {expected} ['--flag', 'a b']"]
