"""The `ssljax` command.

  ssljax train --config configs/simclr.py:mnist5k --workdir runs/simclr [--config.train.steps=500]
  ssljax eval  --workdir runs/simclr [--split validation]
  ssljax plot  --workdir runs/simclr
  ssljax bench memory
  ssljax bench memory --config configs/gpt.py:gpt2 [--param_sharding fsdp] [--config.model.preset=gpt_1b3]
  ssljax bench step --config configs/simclr.py:cifar10 [--bench_steps 20]
  ssljax bench step --preset gpt2_124m[,bert_base,...] [--per_device_batch 8] [--peak_tflops 989.4]
  ssljax bench input --config configs/gpt.py [--bench_steps 50]
  ssljax bench import
  ssljax table --dataset mnist5k --workdir runs/table
  ssljax generate --workdir runs/gpt --prompt "Shares in" [--num_samples 3]
  ssljax tokenizer train --config configs/gpt.py --workdir runs/gpt
  ssljax finetune --workdir runs/bert --task bbc_topic [--config.labels_per_class=10] [--config.init=scratch]
  ssljax zero-shot --workdir runs/clip --image FILE [--image FILE] --labels "red circle,blue square"
  ssljax import models/gpt2 --workdir runs/gpt2 [--config configs/gpt.py:bbc_news]
  ssljax export --workdir runs/gpt2 --format hf exported/gpt2

`ssljax train` resumes from the latest readable checkpoint in --workdir (an unreadable one is
skipped with a warning), and only with a config that trains the same run: a changed key that
changes the run (anything but logging, checkpointing, monitoring, evaluation and device-layout
keys; train.steps does change it) stops it before any compute, naming the key and both values,
unless --allow_config_change. Exit status of `ssljax train`: 0 done; 1 a bad config, input,
workdir or checkpoint, or a non-finite loss (config.train.nonfinite="stop"), each reported in
one line; 75 (EX_TEMPFAIL) stopped by SIGTERM after saving a checkpoint of the step in flight:
run the same command again to resume.

On Linux with glibc 2.35 or later the command first restarts itself once with glibc's memory
backed by transparent huge pages, which makes CPU steps faster (`HUGE_PAGES_TUNABLE`, below);
SSLJAX_HUGE_PAGES=0 turns that off.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

COMMANDS = ("train", "eval", "plot", "bench", "generate", "tokenizer", "finetune", "zero-shot", "import", "export")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and variant, e.g. configs/simclr.py:mnist5k; override keys with --config.KEY=VALUE.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots and eval.json.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "`ssljax train`: resume a workdir whose saved config differs from --config in keys that change the "
    "run (e.g. a longer train.steps, another optim.lr); without it such a resume stops and names the keys.")
_BENCH_STEPS = flags.DEFINE_integer(
    "bench_steps", 20, "Timed steps of `ssljax bench step` (0: compile only, for FLOPs and memory); "
    "timed batches of `ssljax bench input`.")
_BENCH_WARMUP = flags.DEFINE_integer("bench_warmup", 3, "Untimed steps (batches) before `ssljax bench` times any.")
_PRESET = flags.DEFINE_string(
    "preset", None, "`ssljax bench step` presets, comma-separated: gpt2_124m, bert_base, simclr_resnet50, "
    "clip_base, or their *_tiny sizes (ssljax/bench/presets.py).")
_PER_DEVICE_BATCH = flags.DEFINE_integer("per_device_batch", None, "Overrides a bench preset's per-device batch.")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", None, "The device's peak TFLOP/s for MFU in `ssljax bench step`; default: the bfloat16 "
    "peak of a known GPU or TPU (none on CPU).")
_SPLIT = flags.DEFINE_string(
    "split", None, "Split that `ssljax eval` scores: the config's test split by default; the "
    "validation split for recipe trials.")
_PROMPT = flags.DEFINE_multi_string("prompt", None, "Text to continue (`ssljax generate`); repeatable.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Continuations per prompt.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 80, "Most tokens generated per continuation.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0: greedy).")
_TOP_K = flags.DEFINE_integer("top_k", 40, "Sample among the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", None, "Nucleus sampling: the smallest set of tokens with this much probability.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed: the same seed gives the same text.")
_IMAGE = flags.DEFINE_multi_string("image", None, "An image file for `ssljax zero-shot`; repeatable.")
_LABELS = flags.DEFINE_string("labels", None, 'Comma-separated class names for `ssljax zero-shot`, e.g. "red circle,blue square".')
_TEMPLATE = flags.DEFINE_string("template", "a photo of a {}.", "The zero-shot prompt; {} stands for the label.")
_TASK = flags.DEFINE_string(
    "task", None, "Fine-tuning task of `ssljax finetune` (configs/finetune.py:TASK), e.g. bbc_topic, sst2, squad.")
_FORMAT = flags.DEFINE_enum("format", "hf", ["hf"], "`ssljax export`: the layout written (hf: Hugging Face's).")
_PARAM_SHARDING = flags.DEFINE_enum(
    "param_sharding", None, ["replicated", "fsdp"],
    "`ssljax bench memory --config`: the per-device memory of the train step with parameters replicated "
    "or split over the devices (FSDP); default: both.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first: one process per host of a TPU pod or GPU cluster, the "
    "coordinator and process ids from the cluster environment (ssljax/train/distributed.py).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for processes started by hand (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")


def _usage(message: str) -> None:
  raise app.UsageError(f"{message}\nusage: ssljax {{{'|'.join(COMMANDS + ('table',))}}} [flags]; see --help")


def _require_workdir() -> str:
  if not _WORKDIR.value:
    _usage("--workdir is required")
  return _WORKDIR.value


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    _usage(f"expected a command, got {argv[1:]!r}" if len(argv) > 1 else "expected a command")
  command, rest = argv[1], argv[2:]
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS log every save and read at INFO
  from ssljax.train import distributed

  # Before any JAX computation: the config checks already count devices.
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         config=_CONFIG.value)
  if command == "train":
    if _CONFIG.value is None:
      _usage("train needs --config, e.g. --config configs/simclr.py:mnist5k")
    from ssljax.commands import evaluate_workdir
    from ssljax.train import checks, loop

    config = _CONFIG.value
    try:
      checks.check(config)
    except checks.ConfigError as error:
      sys.exit(f"ssljax: bad config: {error}")
    workdir = _require_workdir()
    from ssljax import data
    from ssljax.train import checkpoint, nonfinite, preemption

    try:
      loop.train(config, workdir, progress=_PROGRESS.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
    except preemption.Preempted as stopped:
      print(f"ssljax: {stopped}", file=sys.stderr)
      sys.exit(preemption.PREEMPTED_EXIT_CODE)
    except (checks.ConfigError, checkpoint.CorruptCheckpointError, checkpoint.CheckpointMismatchError,
            nonfinite.NonFiniteError, data.UnreadableImageError) as error:
      if flags.FLAGS["verbosity"].present:
        raise  # --verbosity asks for the traceback too
      sys.exit(f"ssljax: {error}")
    if config.train.evaluate and config.evals:
      evaluate_workdir(workdir)  # the test split, reported once per finished run
  elif command == "eval":
    from ssljax import data
    from ssljax.commands import evaluate_workdir
    from ssljax.train.evaluation import NothingToEvaluate

    try:
      evaluate_workdir(_require_workdir(), split=_SPLIT.value)
    except (data.NoLabelsError, NothingToEvaluate) as error:
      sys.exit(f"ssljax: {error}")
  elif command == "generate":
    if not _PROMPT.value:
      _usage("generate needs --prompt TEXT")
    from ssljax.commands import generate

    outputs = generate(_require_workdir(), _PROMPT.value, num_samples=_NUM_SAMPLES.value,
                       max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value,
                       top_k=_TOP_K.value or None, top_p=_TOP_P.value, greedy=_TEMPERATURE.value == 0,
                       seed=_SEED.value)
    for prompt, samples in zip(_PROMPT.value, outputs):
      for sample in samples:
        print(f"{prompt}{sample}\n---")
  elif command == "tokenizer":
    if rest[:1] != ["train"] or _CONFIG.value is None:
      _usage("usage: ssljax tokenizer train --config configs/gpt.py --workdir DIR")
    import time

    from ssljax.families import text

    config, workdir = _CONFIG.value, _require_workdir()
    texts = text.tokenizer_texts(config)
    start = time.perf_counter()
    tokenizer = text.run_tokenizer(config, workdir, texts)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer.encode(t)) for t in texts)
    size = sum(len(t.encode("utf-8")) for t in texts)
    print(f"{tokenizer.kind} tokenizer: {tokenizer.num_tokens} tokens ({tokenizer.vocab_size} embedding rows), "
          f"ready in {seconds:.1f} s, saved in {workdir}; the training texts are {tokens:,} tokens, "
          f"{size / tokens:.2f} bytes per token")
  elif command == "finetune":
    if _CONFIG.value is None:
      _usage("finetune needs --task NAME (or --config configs/finetune.py:NAME)")
    from ssljax import finetune
    from ssljax.downstream.file_task import TaskFileError
    from ssljax.train import checkpoint, checks, nonfinite, preemption

    try:
      results = finetune.run(_require_workdir(), _TASK.value, config=_CONFIG.value, progress=_PROGRESS.value)
    except preemption.Preempted as stopped:  # each trial is a trainer run: the same command resumes
      print(f"ssljax: {stopped}", file=sys.stderr)
      sys.exit(preemption.PREEMPTED_EXIT_CODE)
    except (finetune.TaskDataMissing, TaskFileError, checks.ConfigError, checkpoint.CorruptCheckpointError,
            checkpoint.CheckpointMismatchError, nonfinite.NonFiniteError) as error:
      if flags.FLAGS["verbosity"].present and not isinstance(error, (finetune.TaskDataMissing, TaskFileError)):
        raise
      sys.exit(f"ssljax: {error}")
    print(finetune.format_results(results))
  elif command == "zero-shot":
    if not _IMAGE.value or not _LABELS.value:
      _usage('zero-shot needs --image FILE and --labels "a,b,c"')
    from ssljax.commands import zero_shot

    print(zero_shot.zero_shot_command(_require_workdir(), _IMAGE.value, _LABELS.value, _TEMPLATE.value))
  elif command in ("import", "export"):
    if len(rest) != 1:
      _usage(f"usage: ssljax import DIR --workdir W [--config CONFIG]; ssljax export --workdir W --format hf OUT "
             f"(got {rest!r})")
    from ssljax import convert

    try:
      if command == "import":
        imported = convert.import_to_workdir(rest[0], _require_workdir(), base_config=_CONFIG.value)
        print(f"imported {imported.config.imported_from} as a {imported.config.objective} run in {_WORKDIR.value}"
              + "".join(f"; {note}" for note in imported.notes))
      else:
        written = convert.export_workdir(_require_workdir(), rest[0])
        print(f"wrote {', '.join(written)} in {rest[0]}")
    except convert.ConversionError as error:
      sys.exit(f"ssljax: {error}")
  elif command == "plot":
    from ssljax.train import plots

    for path in plots.plot_workdir(_require_workdir()):
      print(f"wrote {path}")
  elif command == "bench":
    if rest[:1] == ["memory"] and _CONFIG.value is not None:
      from ssljax.bench import memory

      modes = [_PARAM_SHARDING.value] if _PARAM_SHARDING.value else ["replicated", "fsdp"]
      print(memory.format_rows([memory.step_memory(_CONFIG.value, mode) for mode in modes]))
    elif rest[:1] == ["memory"]:
      from ssljax.bench import loss_memory

      loss_memory.main(rest[1:])
    elif rest[:1] == ["step"]:
      if _CONFIG.value is None and not _PRESET.value:
        _usage("bench step needs --config (e.g. configs/simclr.py:cifar10) or --preset (e.g. gpt2_124m_tiny)")
      from ssljax.bench import command as bench_command

      bench_command.bench_step(_CONFIG.value, _PRESET.value, steps=_BENCH_STEPS.value, warmup=_BENCH_WARMUP.value,
                               peak_tflops=_PEAK_TFLOPS.value, per_device_batch=_PER_DEVICE_BATCH.value,
                               workdir=_WORKDIR.value)
    elif rest[:1] == ["import"]:
      from ssljax.convert import measure

      print(measure.main())
    elif rest[:1] == ["input"]:
      if _CONFIG.value is None:
        _usage("bench input needs --config, e.g. --config configs/gpt.py")
      from ssljax.bench import command as bench_command

      bench_command.bench_input(_CONFIG.value, batches=_BENCH_STEPS.value, warmup=_BENCH_WARMUP.value,
                                workdir=_WORKDIR.value)
    else:
      _usage("bench takes a benchmark name: memory, step, input or import")


def _enable_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk, so a second run of the same config (a resume, an
  eval after train) skips most compilation. SSLJAX_COMPILATION_CACHE='' turns it off."""
  cache_dir = os.environ.get("SSLJAX_COMPILATION_CACHE", os.path.expanduser("~/.cache/ssljax/xla"))
  if cache_dir:
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# XLA:CPU allocates a step's temporary buffers afresh every step, and glibc hands the large ones
# out as fresh 4 KiB pages: on 2 CPU cores a configs/bert.py step took about 300,000 page faults
# and spent some 15% of its time on them. Backed by transparent huge pages (2 MiB), the same
# steps take 30 times fewer faults and 0.97 s instead of 1.14 s (`ssljax bench step`;
# docs/performance.md). glibc (2.35 and later) does so when its tunable glibc.malloc.hugetlb=1 is set,
# and reads tunables only when a process starts, so the command restarts itself once with it
# (SSLJAX_HUGE_PAGES=0: not).
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def huge_pages_tunables(environ, libc: tuple[str, str], thp_mode: str | None) -> str | None:
  """The GLIBC_TUNABLES to restart the command with, or None to run as it is: None when the user
  set SSLJAX_HUGE_PAGES=0 or chose glibc.malloc.hugetlb already, when the C library is not glibc
  2.35 or later, or when the kernel's transparent huge pages are off ("never") or unknown."""
  tunables = environ.get("GLIBC_TUNABLES", "")
  if environ.get("SSLJAX_HUGE_PAGES", "1") == "0" or "glibc.malloc.hugetlb" in tunables:
    return None
  name, version = libc
  try:
    major, minor = (int(part) for part in version.split(".")[:2])
  except ValueError:
    return None
  if name != "glibc" or (major, minor) < (2, 35) or thp_mode not in ("always", "madvise"):
    return None
  return f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE


def _transparent_huge_pages_mode() -> str | None:
  """The kernel's THP setting, the bracketed word of "always [madvise] never"; None if unknown."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      setting = f.read()
  except OSError:
    return None
  start, end = setting.find("["), setting.find("]")
  return setting[start + 1:end] if 0 <= start < end else None


def _restart_with_huge_pages() -> None:
  """Replaces this process (same pid, same arguments) by one with glibc's huge-page tunable set."""
  if not sys.platform.startswith("linux"):
    return
  import platform

  tunables = huge_pages_tunables(os.environ, platform.libc_ver(), _transparent_huge_pages_mode())
  if tunables is None:
    return
  os.environ["GLIBC_TUNABLES"] = tunables
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an override of a config key that does not exist reported in one
  line (config_flags raises a bare KeyError/AttributeError for it)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    sys.exit(f"ssljax: bad flag: {error}")
  except (KeyError, AttributeError) as error:
    # The message arrives as the repr of an inner KeyError: unquote it for reading.
    message = str(error.args[0] if error.args else error).encode().decode("unicode_escape").replace("'", "")
    sys.exit(f"ssljax: bad config override, no such key: {message}")


def _finetune_config_flag(argv: list[str]) -> list[str]:
  """`ssljax finetune --task NAME` reads configs/finetune.py:NAME: the --config flag that
  --config.KEY overrides apply to is added here, before flags are parsed, unless given."""
  if argv[1:2] != ["finetune"] or any(a == "--config" or a.startswith("--config=") for a in argv):
    return argv
  task = None
  for i, arg in enumerate(argv):
    if arg == "--task" and i + 1 < len(argv):
      task = argv[i + 1]
    elif arg.startswith("--task="):
      task = arg.split("=", 1)[1]
  if task is None:
    return argv
  from ssljax.downstream.tasks import NAMES
  from ssljax.train.defaults import CONFIGS_DIR

  if task not in NAMES:
    sys.exit(f"ssljax: unknown fine-tuning task {task!r}; choose one of {', '.join(NAMES)}")
  return [*argv[:2], f"--config={os.path.join(CONFIGS_DIR, 'finetune.py')}:{task}", *argv[2:]]


def run() -> None:
  """Console-script entry point."""
  _restart_with_huge_pages()
  _enable_compilation_cache()
  sys.argv = _finetune_config_flag(sys.argv)
  if sys.argv[1:2] == ["table"]:  # its own argparse flags (--dataset, --objectives, ...)
    from ssljax import table

    table.main(sys.argv[2:])
    return
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
