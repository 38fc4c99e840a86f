"""Several processes (JAX's multi-controller runtime) on one machine: `ssljax train` started as
2 processes of 4 fake CPU devices each, joined by `jax.distributed.initialize` over localhost
(gloo collectives between CPU devices), trains exactly like 1 device (and so like 1 process of 8
devices, which test_cli checks): the same losses, from disjoint per-process reads of the same
global batches. Each
process checkpoints its own iterator state; a resumed 2-process run, with parameters split
across the processes (FSDP), continues with the same losses and evaluates once."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from helpers import REPO, run_cli
from ssljax.train import distributed

SMOKE = os.path.join(REPO, "configs", "simclr.py") + ":smoke"
COMMON = ["--config", SMOKE, "--noprogress", "--config.train.steps=4", "--config.train.checkpoint_every=2"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train_processes(args, data_dir, log_dir, processes=2, devices=4, timeout=600):
  """`ssljax train ARGS` as `processes` processes of `devices` CPU devices each; (returncode,
  output) per process."""
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "SSLJAX_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu"}
  address = f"localhost:{_free_port()}"
  runs = []
  for index in range(processes):
    log = open(os.path.join(log_dir, f"process_{index}.log"), "w+")
    command = [sys.executable, "-m", "ssljax.cli", "train", *args, "--coordinator_address", address,
               "--num_processes", str(processes), "--process_id", str(index)]
    runs.append((subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log))
  results = []
  try:
    for process, log in runs:
      code = process.wait(timeout=timeout)
      log.seek(0)
      results.append((code, log.read()))
  finally:
    for process, log in runs:
      if process.poll() is None:
        process.kill()
      log.close()
  return results


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert len({r["step"] for r in records}) == len(records), "a step logged twice: one process writes"
  return {r["step"]: r["loss"] for r in records}


def _assert_same_losses(got, want):
  assert sorted(got) == sorted(want) == [1, 2, 3, 4]
  for step in want:
    assert got[step] == pytest.approx(want[step], rel=1e-5), (step, got, want)


@pytest.fixture(scope="module")
def one_device_losses(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("one_device"))
  result = run_cli(["train", "--workdir", workdir, *COMMON, "--config.train.evaluate=False"], data_dir, devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  return _losses(workdir)


def _knn(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["val_knn_accuracy"] for r in map(json.loads, f) if "val_knn_accuracy" in r}


def test_two_processes_with_split_parameters_train_like_one_device_resume_and_evaluate_once(
    tmp_path, data_dir, one_device_losses):
  """2 processes with FSDP across them (every leaf with a dimension divisible by 8 split) train
  like 1 device (test_cli: 8 devices of one process train like 1), each process saving its own
  iterator position;
  killed after the checkpoint of step 2 (here: the later one deleted) and resumed, they continue
  with the same losses and kNN monitors, and process 0 alone evaluates and writes eval.json."""
  workdir = str(tmp_path / "fsdp")
  # The kNN monitor reads the split parameters whole on every process.
  args = ["--workdir", workdir, *COMMON, "--config.train.param_sharding=fsdp", "--config.train.fsdp_min_size=0",
          "--config.evals.knn.every=2"]
  for code, output in _train_processes([*args, "--config.train.evaluate=False"], data_dir, tmp_path):
    assert code == 0, output[-3000:]
  _assert_same_losses(_losses(workdir), one_device_losses)
  data_item = os.path.join(workdir, "checkpoints", "4", "data")
  assert sorted(f for f in os.listdir(data_item) if f.endswith(".json")) == ["process_0-of-2.json",
                                                                            "process_1-of-2.json"]
  knn = _knn(workdir)
  assert sorted(knn) == [2, 4]

  shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
  results = _train_processes(args, data_dir, tmp_path)
  for code, output in results:
    assert code == 0, output[-3000:]
  _assert_same_losses(_losses(workdir), one_device_losses)
  assert _knn(workdir) == pytest.approx(knn)
  eval_json = os.path.join(workdir, "eval.json")
  assert f"written to {eval_json}" in results[0][1] and "written to" not in results[1][1]
  with open(eval_json) as f:
    assert json.load(f)["split"] == "test"


def test_what_asks_for_several_processes():
  assert not distributed.requested(environ={})
  assert distributed.requested(flag=True, environ={})
  assert distributed.requested(coordinator_address="host:1234", environ={})
  assert distributed.requested(environ={"JAX_COORDINATOR_ADDRESS": "host:1234"})
  assert distributed.requested(environ={"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "16"})
  assert not distributed.requested(environ={"SLURM_NTASKS": "16"})  # an allocation, not an srun step
  assert not distributed.requested(environ={"SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1"})
  assert distributed.requested(environ={"OMPI_COMM_WORLD_SIZE": "4"})
  from ssljax.train import defaults

  config = defaults.base_config()
  assert not distributed.requested(config=config, environ={})
  config.train.distributed = True
  assert distributed.requested(config=config, environ={})


def test_a_checkpoint_of_another_process_count_is_a_mismatch_not_corrupt(tmp_path):
  """Each process's iterator state is its own: resuming with another number of processes is
  refused by name (not skipped as unreadable, which would set every checkpoint aside)."""
  import jax.numpy as jnp

  from ssljax.train import checkpoint

  mngr = checkpoint.manager(str(tmp_path), save_every=1, keep=2, async_save=False)
  state = {"w": jnp.ones((4,))}
  checkpoint.save(mngr, 1, state, {"next_index": 1}, force=True)
  mngr.wait_until_finished()
  assert checkpoint.restore(mngr, state)[1] == {"next_index": 1}
  data_item = os.path.join(str(tmp_path), "checkpoints", "1", "data")
  for index in range(2):  # as two processes would have saved it
    shutil.copy(os.path.join(data_item, "metadata"), os.path.join(data_item, f"process_{index}-of-2.json"))
  os.remove(os.path.join(data_item, "metadata"))
  with pytest.raises(checkpoint.CheckpointMismatchError, match="saved by 2 process"):
    checkpoint.restore(mngr, state)
  mngr.close()


def test_only_process_0_trains_the_tokenizer_the_others_read_its_files(tmp_path, monkeypatch):
  """In a fresh multi-process text run, process 1 neither reads training texts nor trains: it
  waits at the barrier while process 0 saves, then loads process 0's files."""
  from ssljax.families import text
  from ssljax.text import tokenizer as tokenizer_lib
  from ssljax.train import defaults

  config = defaults.load_config("gpt:smoke")
  workdir = str(tmp_path)
  barriers = []

  def barrier(name):
    barriers.append(name)
    if name == "ssljax: tokenizer saved":  # meanwhile, process 0 saved its tokenizer
      tokenizer_lib.ByteTokenizer().save(workdir)

  def texts():
    raise AssertionError("process 1 read the tokenizer's training texts")

  monkeypatch.setattr(text, "_barrier", barrier)
  monkeypatch.setattr(text.jax, "process_index", lambda: 1)
  tokenizer = text.run_tokenizer(config, workdir, texts)
  assert barriers == ["ssljax: tokenizer lookup", "ssljax: tokenizer saved"]
  assert tokenizer.kind == "byte" and tokenizer.encode("abc") == tokenizer_lib.ByteTokenizer().encode("abc")
  # A resumed run (the tokenizer already saved) passes the first barrier only.
  barriers.clear()
  text.run_tokenizer(config, workdir, texts)
  assert barriers == ["ssljax: tokenizer lookup"]


@pytest.mark.slow  # two GPT processes: ~40 s
def test_two_processes_share_one_freshly_trained_sentencepiece_tokenizer(tmp_path, data_dir):
  """A fresh GPT run of 2 processes with a SentencePiece tokenizer to train: process 0 trains
  and saves it, process 1 waits and loads it, and both train on it."""
  workdir = str(tmp_path / "gpt")
  args = ["--workdir", workdir, "--config", os.path.join(REPO, "configs", "gpt.py") + ":smoke", "--noprogress",
          "--config.text.tokenizer=sentencepiece", "--config.text.vocab_size=512", "--config.train.steps=2",
          "--config.train.evaluate=False"]
  results = _train_processes(args, data_dir, tmp_path, devices=1)
  for code, output in results:
    assert code == 0, output[-3000:]
  assert os.path.exists(os.path.join(workdir, "tokenizer.model"))
  assert sorted(_losses(workdir)) == [1, 2]
