"""The `ssljax` command.

  ssljax COMMAND [flags]

`ssljax --help` lists the commands (COMMANDS, below) and the flags every command shares;
`ssljax COMMAND --help` shows a command's own flags, their defaults and examples; `ssljax
--helpfull` shows every flag, absl's included. A command takes its own flags and the shared
ones: a flag of another command is refused, naming the command it belongs to, and a mistyped
flag or command gets the closest one suggested. Commands that take --config take overrides of
its keys too, `--config.KEY=VALUE`.

`ssljax train` resumes from the latest readable checkpoint in --workdir (an unreadable one is
skipped with a warning), and only with a config that trains the same run: a changed key that
changes the run (anything but logging, checkpointing, monitoring, evaluation and device-layout
keys; train.steps does change it) stops it before any compute, naming the key and both values,
unless --allow_config_change.

Exit status: 0 done (or help shown); 2 a mistake of the user's (`ssljax.errors.UserError`: a bad
config, variant, path, workdir, flag or flag value, a dataset not prepared offline, a checkpoint
that cannot be restored, a non-finite loss under config.train.nonfinite="stop"), reported in
one line that names the problem and what to do, with its traceback only under --verbose; 1 an
error inside ssljax, with its traceback; 75 (EX_TEMPFAIL, `train` and `finetune`) stopped by
SIGTERM after saving a checkpoint of the step in flight: run the same command again to resume.

On Linux with glibc 2.35 or later the command first restarts itself once with glibc's memory
backed by transparent huge pages, which makes CPU steps faster (`HUGE_PAGES_TUNABLE`, below);
SSLJAX_HUGE_PAGES=0 turns that off.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import textwrap
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from ssljax.errors import UserError

# --- flags: each belongs to the commands that COMMANDS lists it under --------------------------

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and variant, e.g. configs/simclr.py:mnist5k; override any of its keys with "
    "--config.KEY=VALUE.", lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The run's directory: its config, checkpoints, metrics and reports (bench: where bench.jsonl "
    "goes; table: one run per objective).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir whose saved config differs in keys that change the run (e.g. a longer train.steps, "
    "another optim.lr); without it such a resume stops and names the keys.")
_SPLIT = flags.DEFINE_string(
    "split", None, "The split scored: the config's test split by default (the figure a run reports once); "
    "validation for recipe trials.")
_PROMPT = flags.DEFINE_multi_string("prompt", None, "Text to continue")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Continuations per prompt.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 80, "Most tokens generated per continuation.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0: greedy).")
_TOP_K = flags.DEFINE_integer("top_k", 40, "Sample among the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", None, "Nucleus sampling: the smallest set of tokens with this much probability.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed: the same seed gives the same text.")
_IMAGE = flags.DEFINE_multi_string("image", None, "An image file to classify")
_LABELS = flags.DEFINE_string("labels", None, 'Comma-separated class names, e.g. "red circle,blue square".')
_TEMPLATE = flags.DEFINE_string("template", "a photo of a {}.", "The prompt; {} stands for the label.")
_TASK = flags.DEFINE_string(
    "task", None, "The fine-tuning task (its recipe: configs/finetune.py:TASK), e.g. bbc_topic, sst2, squad, file.")
_FORMAT = flags.DEFINE_enum("format", "hf", ["hf"], "The layout written (hf: Hugging Face's).")
_BENCH_STEPS = flags.DEFINE_integer(
    "bench_steps", 20, "Timed steps (bench step; 0: compile only, for FLOPs and memory) or batches (bench input).")
_BENCH_WARMUP = flags.DEFINE_integer("bench_warmup", 3, "Untimed steps (batches) before any is timed.")
_PRESET = flags.DEFINE_string(
    "preset", None, "Presets, comma-separated: gpt2_124m, bert_base, simclr_resnet50, clip_base, or their *_tiny "
    "sizes (ssljax/bench/presets.py).")
_PER_DEVICE_BATCH = flags.DEFINE_integer("per_device_batch", None, "Overrides a preset's per-device batch.")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", None, "The device's peak TFLOP/s for MFU; default: the bfloat16 peak of a known GPU or TPU "
    "(none on CPU).")
_PARAM_SHARDING = flags.DEFINE_enum(
    "param_sharding", None, ["replicated", "fsdp"],
    "The per-device memory of the train step with parameters replicated or split over the devices (FSDP); "
    "default: both.")
_DATASET = flags.DEFINE_string("dataset", "mnist5k", "The dataset every objective trains and is probed on.")
_OBJECTIVES = flags.DEFINE_list(
    "objectives", None, "Comma-separated config names; default: every image objective (ssljax/table.py).")
_VARIANT = flags.DEFINE_string("variant", None, "The configs' variant; default: the dataset's name.")
_CONFIGS_DIR = flags.DEFINE_string("configs_dir", None, "Where the configs are; default: the repository's configs/.")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", None, "KEY=VALUE: a dotted config key set in every config, e.g. train.steps=50")
_MARKDOWN = flags.DEFINE_bool("markdown", False, "Also print the table as Markdown.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "On a mistake of the user's (exit status 2), print its traceback before the one-line message.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first: one process per host of a TPU pod or GPU cluster, the "
    "coordinator and process ids from the cluster environment (ssljax/train/distributed.py).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for processes started by hand (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")

SHARED_FLAGS = ("verbose", "distributed", "coordinator_address", "num_processes", "process_id")


# --- the commands --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Command:
  """One command of `ssljax`: what its --help shows, and what the checks of its command line read.

  name: the words after `ssljax`, e.g. "train" or "bench step".
  summary: one line, shown by `ssljax --help` and in the README's list of commands.
  flags: its own flags (every command also takes SHARED_FLAGS).
  examples: command lines that README.md or docs/ show.
  required: the flags it cannot run without.
  arguments: the names of its positional arguments, e.g. ("DIR",).
  """
  name: str
  summary: str
  flags: tuple[str, ...]
  examples: tuple[str, ...]
  required: tuple[str, ...] = ()
  arguments: tuple[str, ...] = ()


COMMANDS = (
    Command("train", "Train a model from a config, resuming the workdir's run; evaluate it at the end.",
            ("config", "workdir", "progress", "allow_config_change"),
            ("ssljax train --config configs/simclr.py:mnist5k --workdir runs/simclr",
             "ssljax train --config configs/simclr.py:mnist5k --workdir runs/simclr-t01 "
             "--config.loss.temperature=0.1 --config.evals.knn.every=100"),
            required=("config", "workdir")),
    Command("eval", "Evaluate a run's latest checkpoint with its config's evaluators; write eval.json.",
            ("workdir", "split"), ("ssljax eval --workdir runs/simclr-t01 --split validation",),
            required=("workdir",)),
    Command("plot", "Write PNG curves of a run's logged metrics into its plots/ folder.",
            ("workdir",), ("ssljax plot --workdir runs/simclr-t01",), required=("workdir",)),
    Command("generate", "Continue prompts with a trained GPT run.",
            ("workdir", "prompt", "num_samples", "max_new_tokens", "temperature", "top_k", "top_p", "seed"),
            ('ssljax generate --workdir runs/gpt --prompt "Shares in" --num_samples 3',),
            required=("workdir", "prompt")),
    Command("zero-shot", "Classify images among any labels with a trained CLIP run.",
            ("workdir", "image", "labels", "template"),
            ('ssljax zero-shot --workdir runs/clip --image photo.png --labels "red circle,blue square"',),
            required=("workdir", "image", "labels")),
    Command("finetune", "Fine-tune a run's encoder: BERT on a task, an image run on its labels; lr chosen on validation.",
            ("workdir", "task", "config", "progress"),
            ("ssljax finetune --workdir runs/bert --task bbc_topic",
             "ssljax finetune --workdir runs/mae --config.labels_per_class=10"),
            required=("workdir",)),
    Command("table", "Pretrain every image objective and probe each beside the baselines, in one table.",
            ("dataset", "workdir", "objectives", "variant", "configs_dir", "override", "split", "markdown",
             "progress"),
            ("ssljax table --dataset mnist5k --workdir runs/table",), required=("workdir",)),
    Command("tokenizer train", "Train a language config's tokenizer alone and save it in the workdir.",
            ("config", "workdir"), ("ssljax tokenizer train --config configs/gpt.py --workdir runs/gpt",),
            required=("config", "workdir")),
    Command("import", "Import a Hugging Face GPT-2/BERT/CLIP or torchvision ResNet checkpoint as a run.",
            ("workdir", "config"),
            ("ssljax import DIR --workdir W",
             "ssljax import resnet50.safetensors --workdir W --config configs/simclr.py:imagenet "
             "--config.model.dtype=float32"),
            required=("workdir",), arguments=("CHECKPOINT",)),
    Command("export", "Export a run as a Hugging Face checkpoint folder that transformers reads.",
            ("workdir", "format"), ("ssljax export --workdir W --format hf OUT",),
            required=("workdir",), arguments=("OUT",)),
    Command("bench step", "Time a config's train step, or preset models': step time, FLOP/s, MFU, memory.",
            ("config", "preset", "bench_steps", "bench_warmup", "peak_tflops", "per_device_batch", "workdir"),
            ("ssljax bench step --config configs/simclr.py:cifar10",
             "ssljax bench step --preset gpt2_124m_tiny --peak_tflops 1.0")),
    Command("bench input", "Time a config's input pipeline alone: batches and examples per second.",
            ("config", "bench_steps", "bench_warmup", "workdir"), ("ssljax bench input --config configs/gpt.py",),
            required=("config",)),
    Command("bench memory", "Per-device memory of a config's train step as XLA plans it (or of NT-Xent, no config).",
            ("config", "param_sharding"), ("ssljax bench memory --config configs/gpt.py:gpt2", "ssljax bench memory")),
    Command("bench import", "Time and peak memory of importing a GPT-2-small-sized checkpoint.",
            (), ("ssljax bench import",)),
)
BY_NAME = {command.name: command for command in COMMANDS}
# The words that start a command: "train", ..., and the groups "bench" and "tokenizer".
FIRST_WORDS = tuple(dict.fromkeys(command.name.split()[0] for command in COMMANDS))
# Each command-specific flag -> the commands that take it.
OWNERS = {name: tuple(c.name for c in COMMANDS if name in c.flags) for c in COMMANDS for name in c.flags}
HELP_ARGS = ("-h", "--help", "-?", "--helpshort")
FULL_HELP_ARGS = ("--helpfull", "--helpxml")
# How --help's usage line spells a required flag's value.
METAVARS = {"config": "FILE[:VARIANT]", "workdir": "DIR", "prompt": "TEXT", "image": "FILE", "labels": "A,B,..."}
WIDTH = 100


def _quoted(names) -> str:
  return ", ".join(f"'ssljax {name}'" for name in names)


def _see_help(command: Command) -> str:
  return f"'ssljax {command.name} --help' lists its flags"


def _suggestion(word: str, choices) -> str:
  """ "; did you mean X?" for the choice closest to `word`, or ""."""
  close = difflib.get_close_matches(word, list(choices), n=1)
  return f"; did you mean {close[0]}?" if close else ""


def _words(args: list[str]) -> list[str]:
  """The leading arguments that are not flags: a command's name and, after it, its positional ones."""
  words = []
  for arg in args:
    if arg.startswith("-"):
      break
    words.append(arg)
  return words


def _group(first: str) -> list[Command]:
  return [c for c in COMMANDS if c.name.split()[0] == first]


def command_of(args: list[str]) -> tuple[Command, int]:
  """The command that `args` (the arguments after `ssljax`) name, and how many words name it; a
  UserError for none, for an unknown one (suggesting the closest) or for a group's missing part."""
  words = _words(args)
  if not words:
    raise UserError(f"expected a command: ssljax COMMAND [flags], COMMAND one of {', '.join(FIRST_WORDS)}; "
                    "'ssljax --help' lists them")
  if words[0] not in FIRST_WORDS:
    raise UserError(f"unknown command {words[0]!r}{_suggestion(words[0], FIRST_WORDS)} ('ssljax --help' lists "
                    "the commands)")
  if words[0] in BY_NAME:
    return BY_NAME[words[0]], 1
  name = " ".join(words[:2])
  if name in BY_NAME:
    return BY_NAME[name], 2
  parts = [c.name.split()[1] for c in _group(words[0])]
  given = f", not {words[1]!r}{_suggestion(words[1], parts)}" if len(words) > 1 else ""
  raise UserError(f"'ssljax {words[0]}' takes one of {', '.join(parts)}{given} ('ssljax {words[0]} --help' lists "
                  "them)")


# --- help ---------------------------------------------------------------------------------------

def _shown_default(value) -> str:
  """A default as a user would type it: true, 'a photo of a {}.', 20."""
  if isinstance(value, bool):
    return str(value).lower()
  return repr(value) if isinstance(value, str) else str(value)


def flag_help(name: str) -> str:
  """A flag as --help shows it: its name (--[no]name for a boolean), then its help and default."""
  flag = flags.FLAGS[name]
  text = " ".join(flag.help.split())  # absl appends a note with a line break to a repeatable flag's help
  text += "" if flag.default is None else f" (default: {_shown_default(flag.default)})"
  body = textwrap.fill(text, WIDTH, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
  return f"  --{'[no]' if flag.boolean else ''}{name}\n{body}"


def _usage(command: Command) -> str:
  required = " ".join(f"--{name} {METAVARS.get(name, name.upper())}" for name in command.required)
  return " ".join(filter(None, ["usage: ssljax", command.name, *command.arguments, required, "[flags]"]))


def command_help(command: Command) -> str:
  """`ssljax COMMAND --help`: usage, summary, its own flags with their defaults, examples."""
  lines = [_usage(command), "", command.summary, ""]
  if command.flags:
    lines += ["Flags:", *(flag_help(name) for name in command.flags)]
    if "config" in command.flags:
      lines.append("  --config.KEY=VALUE\n      Overrides a key of the config, e.g. --config.train.steps=500.")
    lines.append("")
  lines += ["Examples:", *(f"  {example}" for example in command.examples), ""]
  lines.append(textwrap.fill(f"Every command also takes {', '.join('--' + f for f in SHARED_FLAGS)}: "
                             "'ssljax --help'.", WIDTH))
  return "\n".join(lines)


def _listing(commands) -> list[str]:
  column = max(len(c.name) for c in commands) + 2
  return [f"  {c.name:<{column}}{c.summary}" for c in commands]


def group_help(first: str) -> str:
  """`ssljax bench --help`: the group's commands, a line each."""
  group = _group(first)
  parts = "|".join(c.name.split()[1] for c in group)
  return "\n".join([f"usage: ssljax {first} {{{parts}}} [flags]", "", "Commands:", *_listing(group), "",
                    f"'ssljax {first} COMMAND --help' shows a command's flags and examples."])


def main_help() -> str:
  """`ssljax --help`: the commands, a line each, and the flags every command shares."""
  return "\n".join([
      "usage: ssljax COMMAND [flags]", "", "Self-supervised learning in JAX and Flax.", "", "Commands:",
      *_listing(COMMANDS), "", "Flags of every command:", *(flag_help(name) for name in SHARED_FLAGS), "",
      "'ssljax COMMAND --help' shows a command's own flags and examples; 'ssljax --helpfull' every flag,",
      "absl's included.",
  ])


def markdown_commands() -> str:
  """The commands as the README lists them: a Markdown table of `ssljax --help`'s lines."""
  return "\n".join(["| command | what it does |", "|---|---|",
                    *(f"| `ssljax {c.name}` | {c.summary} |" for c in COMMANDS)])


def help_text(args: list[str]) -> str:
  """The help that `ssljax ARGS --help` asks for: of the command ARGS name, its group, or all."""
  words = _words(args)
  if not words:
    return main_help()
  if words[0] in FIRST_WORDS and words[0] not in BY_NAME and " ".join(words[:2]) not in BY_NAME:
    return group_help(words[0])
  return command_help(command_of(args)[0])


# --- checks of a command line, before it runs ------------------------------------------------------

def _flag_name(arg: str) -> str | None:
  """The flag of ssljax's own that `arg` sets (--name, --name=V, --noname, --config.KEY=V), or None."""
  if not arg.startswith("-") or arg == "-":
    return None
  name = arg.lstrip("-").split("=", 1)[0].split(".", 1)[0]
  negated = name[2:]
  if name.startswith("no") and name not in flags.FLAGS and negated in flags.FLAGS and flags.FLAGS[negated].boolean:
    name = negated
  return name if name in OWNERS or name in SHARED_FLAGS else None


def check_flags_belong(command: Command, args: list[str]) -> None:
  """A UserError for a flag of another command among `args`, naming the command(s) it belongs to."""
  for arg in args:
    if arg == "--":  # what follows is not flags
      return
    name = _flag_name(arg)
    if name is None or name in command.flags or name in SHARED_FLAGS:
      continue
    raise UserError(f"{arg.split('=', 1)[0]} is a flag of {_quoted(OWNERS[name])}, not of 'ssljax {command.name}' "
                    f"({_see_help(command)})")


def unknown_flag_message(command: Command, name: str) -> str:
  """What to say of --name, which no command takes: the closest flag of this command (or of
  another, naming it), else where the flags are listed."""
  if name.startswith("config."):  # config_flags defines the overrides only beside a --config
    return f"--{name} overrides a key of the config that --config names: give --config FILE[:VARIANT] too"
  own = difflib.get_close_matches(name, [*command.flags, *SHARED_FLAGS], n=1)
  if own:
    return f"unknown flag --{name}; did you mean --{own[0]}? ({_see_help(command)})"
  other = difflib.get_close_matches(name, list(OWNERS), n=1)
  if other:
    return (f"unknown flag --{name}; --{other[0]} is a flag of {_quoted(OWNERS[other[0]])}, not of "
            f"'ssljax {command.name}' ({_see_help(command)})")
  return f"unknown flag --{name} ({_see_help(command)})"


def check_config_file(args: list[str]) -> None:
  """A UserError for a --config file that does not exist (config_flags would otherwise report it
  as a multi-line dump only when the config is first read)."""
  for i, arg in enumerate(args):
    if arg in ("--config", "-config") and i + 1 < len(args):
      spec = args[i + 1]
    elif arg.startswith(("--config=", "-config=")):
      spec = arg.split("=", 1)[1]
    else:
      continue
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
      raise UserError(f"--config {spec}: there is no file {path} (relative to {os.getcwd()}); give a config file "
                      "and its variant, e.g. --config configs/simclr.py:mnist5k")


def check_command_line(command: Command, arguments: list[str]) -> None:
  """A UserError for a required flag not given, or for positional arguments other than the
  command's."""
  for name in command.required:
    if flags.FLAGS[name].value is None:
      raise UserError(f"'ssljax {command.name}' needs --{name} {METAVARS.get(name, name.upper())} "
                      f"({_see_help(command)})")
  if len(arguments) != len(command.arguments):
    takes = " ".join(command.arguments) or "no positional argument"
    raise UserError(f"'ssljax {command.name}' takes {takes}, got {' '.join(arguments) or 'none'} "
                    f"({_see_help(command)})")


# --- what each command runs -----------------------------------------------------------------------

def _exit_preempted(stopped: Exception) -> None:
  from ssljax.train import preemption

  print(f"ssljax: {stopped}", file=sys.stderr)
  sys.exit(preemption.PREEMPTED_EXIT_CODE)


def _train(arguments: list[str]) -> None:
  from ssljax.commands import evaluate_workdir
  from ssljax.train import loop, preemption

  config = _CONFIG.value
  try:
    loop.train(config, _WORKDIR.value, progress=_PROGRESS.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except preemption.Preempted as stopped:
    _exit_preempted(stopped)
  if config.train.evaluate and config.evals:
    evaluate_workdir(_WORKDIR.value)  # the test split, reported once per finished run


def _eval(arguments: list[str]) -> None:
  from ssljax.commands import evaluate_workdir

  evaluate_workdir(_WORKDIR.value, split=_SPLIT.value)


def _plot(arguments: list[str]) -> None:
  from ssljax.train import plots

  for path in plots.plot_workdir(_WORKDIR.value):
    print(f"wrote {path}")


def _generate(arguments: list[str]) -> None:
  from ssljax.commands import generate

  outputs = generate(_WORKDIR.value, _PROMPT.value, num_samples=_NUM_SAMPLES.value,
                     max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value,
                     top_k=_TOP_K.value or None, top_p=_TOP_P.value, greedy=_TEMPERATURE.value == 0,
                     seed=_SEED.value)
  for prompt, samples in zip(_PROMPT.value, outputs):
    for sample in samples:
      print(f"{prompt}{sample}\n---")


def _zero_shot(arguments: list[str]) -> None:
  from ssljax.commands import zero_shot

  print(zero_shot.zero_shot_command(_WORKDIR.value, _IMAGE.value, _LABELS.value, _TEMPLATE.value))


def _finetune(arguments: list[str]) -> None:
  if _CONFIG.value is None:
    raise UserError("'ssljax finetune' of a BERT run needs --task TASK (or --config configs/finetune.py:TASK); "
                    f"an image run needs only --workdir ({_see_help(BY_NAME['finetune'])})")
  from ssljax import finetune
  from ssljax.train import preemption

  try:
    results = finetune.run(_WORKDIR.value, _TASK.value, config=_CONFIG.value, progress=_PROGRESS.value)
  except preemption.Preempted as stopped:  # each trial is a trainer run: the same command resumes
    _exit_preempted(stopped)
  print(finetune.format_results(results))


def _table(arguments: list[str]) -> None:
  from ssljax import table

  overrides = dict(table.parse_override(text) for text in _OVERRIDE.value or ())
  results = table.run_table(_DATASET.value, tuple(_OBJECTIVES.value or table.OBJECTIVES), _WORKDIR.value, overrides,
                            _PROGRESS.value, variant=_VARIANT.value, configs_dir=_CONFIGS_DIR.value,
                            split=_SPLIT.value or "test")
  if _MARKDOWN.value:
    print(table.markdown_table(results))


def _tokenizer_train(arguments: list[str]) -> None:
  import time

  from ssljax.families import text

  config, workdir = _CONFIG.value, _WORKDIR.value
  texts = text.tokenizer_texts(config)
  start = time.perf_counter()
  tokenizer = text.run_tokenizer(config, workdir, texts)
  seconds = time.perf_counter() - start
  tokens = sum(len(tokenizer.encode(t)) for t in texts)
  size = sum(len(t.encode("utf-8")) for t in texts)
  print(f"{tokenizer.kind} tokenizer: {tokenizer.num_tokens} tokens ({tokenizer.vocab_size} embedding rows), "
        f"ready in {seconds:.1f} s, saved in {workdir}; the training texts are {tokens:,} tokens, "
        f"{size / tokens:.2f} bytes per token")


def _import(arguments: list[str]) -> None:
  from ssljax import convert

  imported = convert.import_to_workdir(arguments[0], _WORKDIR.value, base_config=_CONFIG.value)
  print(f"imported {imported.config.imported_from} as a {imported.config.objective} run in {_WORKDIR.value}"
        + "".join(f"; {note}" for note in imported.notes))


def _export(arguments: list[str]) -> None:
  from ssljax import convert

  written = convert.export_workdir(_WORKDIR.value, arguments[0])
  print(f"wrote {', '.join(written)} in {arguments[0]}")


def _bench_step(arguments: list[str]) -> None:
  if _CONFIG.value is None and not _PRESET.value:
    raise UserError("'ssljax bench step' needs --config (e.g. configs/simclr.py:cifar10) or --preset (e.g. "
                    f"gpt2_124m_tiny) ({_see_help(BY_NAME['bench step'])})")
  from ssljax.bench import command as bench_command

  bench_command.bench_step(_CONFIG.value, _PRESET.value, steps=_BENCH_STEPS.value, warmup=_BENCH_WARMUP.value,
                           peak_tflops=_PEAK_TFLOPS.value, per_device_batch=_PER_DEVICE_BATCH.value,
                           workdir=_WORKDIR.value)


def _bench_input(arguments: list[str]) -> None:
  from ssljax.bench import command as bench_command

  bench_command.bench_input(_CONFIG.value, batches=_BENCH_STEPS.value, warmup=_BENCH_WARMUP.value,
                            workdir=_WORKDIR.value)


def _bench_memory(arguments: list[str]) -> None:
  if _CONFIG.value is None:
    from ssljax.bench import loss_memory

    loss_memory.main([])
    return
  from ssljax.bench import memory

  modes = [_PARAM_SHARDING.value] if _PARAM_SHARDING.value else ["replicated", "fsdp"]
  print(memory.format_rows([memory.step_memory(_CONFIG.value, mode) for mode in modes]))


def _bench_import(arguments: list[str]) -> None:
  from ssljax.convert import measure

  print(measure.main())


RUNNERS = {
    "train": _train, "eval": _eval, "plot": _plot, "generate": _generate, "zero-shot": _zero_shot,
    "finetune": _finetune, "table": _table, "tokenizer train": _tokenizer_train, "import": _import,
    "export": _export, "bench step": _bench_step, "bench input": _bench_input, "bench memory": _bench_memory,
    "bench import": _bench_import,
}


def main(argv: list[str]) -> None:
  """Runs the command that argv names, its flags parsed (absl's app.run calls this)."""
  command, words = command_of(argv[1:])
  arguments = argv[1 + words:]
  check_command_line(command, arguments)
  _enable_compilation_cache()
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax and TFDS log every save and read at INFO
  from ssljax.train import distributed

  # Before any JAX computation: the config checks already count devices.
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         config=_CONFIG.value)
  RUNNERS[command.name](arguments)


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




def _chain(error: BaseException) -> list[BaseException]:
  """`error` and the exceptions it was raised from or while handling, outermost first."""
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def _innermost_user_error(error: BaseException) -> UserError | None:
  """The innermost UserError of the chain that ended in `error`: the one raised where the problem
  was found (config_flags re-raises an error of the config file as a copy holding a traceback)."""
  found = [e for e in _chain(error) if isinstance(e, UserError)]
  return found[-1] if found else None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, every mistake a UserError: an unknown flag with the closest suggested,
  a bad value, an error of the config file (e.g. an unknown variant) as it was raised there, an
  override of a config key that does not exist."""
  try:
    return flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as error:
    raise UserError(unknown_flag_message(command_of(argv[1:])[0], error.flagname)) from None
  except flags.Error as error:
    found = _innermost_user_error(error)
    if found is not None:
      raise found from None
    message = str(error)
    if "Error whilst parsing config file" in message:
      # config_flags puts the config file's traceback into the message: name the error it ended in.
      cause = _chain(error)[-1]
      message = f"{message.split(': Error whilst', 1)[0]}: {type(cause).__name__}: {cause}"
    raise UserError(f"bad flag: {message}") from error
  except (KeyError, AttributeError) as error:
    # config_flags raises a bare KeyError/AttributeError for an override of a key that does not
    # exist; its message arrives as the repr of an inner KeyError: unquote it for reading.
    message = str(error.args[0] if error.args else error).encode().decode("unicode_escape").replace("'", "")
    raise UserError(f"bad config override, no such key: {message}") from None


def _flag_value(argv: list[str], name: str) -> str | None:
  """The value of `--name VALUE` or `--name=VALUE` in a command line (the last given), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
  return value


def _finetune_config_flag(argv: list[str]) -> list[str]:
  """`ssljax finetune --task NAME` reads configs/finetune.py:NAME, and `ssljax finetune --workdir
  IMAGE_RUN` (no --task) configs/finetune_images.py: the --config flag that --config.KEY
  overrides apply to is added here, before flags are parsed, unless given."""
  if argv[1:2] != ["finetune"] or any(a == "--config" or a.startswith("--config=") for a in argv):
    return argv
  task = _flag_value(argv, "task")
  if task is None:
    from ssljax.finetune import images
    from ssljax.train.defaults import CONFIGS_DIR

    workdir = _flag_value(argv, "workdir")
    if workdir is None or not images.is_image_run(workdir):
      return argv
    return [*argv[:2], f"--config={os.path.join(CONFIGS_DIR, 'finetune_images.py')}", *argv[2:]]
  from ssljax.downstream.tasks import NAMES
  from ssljax.train.defaults import CONFIGS_DIR

  if task not in NAMES:
    raise UserError(f"unknown fine-tuning task {task!r}{_suggestion(task, NAMES) or '.'} Choose one of "
                    f"{', '.join(NAMES)}.")
  return [*argv[:2], f"--config={os.path.join(CONFIGS_DIR, 'finetune.py')}:{task}", *argv[2:]]


def _run(argv: list[str]) -> None:
  """Help, or the checks of the command line and then the command."""
  args = argv[1:]
  if any(arg in FULL_HELP_ARGS for arg in args):  # absl's listing of every flag
    app.run(main, flags_parser=_parse_flags)
  if any(arg in HELP_ARGS for arg in args):  # before JAX is imported: help comes at once
    print(help_text(args))
    return
  if not args:
    print(main_help(), file=sys.stderr)
    sys.exit(2)
  command, words = command_of(args)
  check_flags_belong(command, args[words:])
  check_config_file(args[words:])
  sys.argv = _finetune_config_flag(argv)  # config_flags reads the overrides from sys.argv
  app.run(main, flags_parser=_parse_flags)


def _asked_for_traceback(argv: list[str]) -> bool:
  if flags.FLAGS.is_parsed():
    return _VERBOSE.value
  return any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in argv)


def run() -> None:
  """Console-script entry point: a UserError, wherever it was raised, ends the command with its
  message in one line and exit status 2; any other error keeps its traceback (status 1)."""
  _restart_with_huge_pages()
  try:
    _run(sys.argv)
  except UserError as error:
    if _asked_for_traceback(sys.argv):
      traceback.print_exc()
    print(f"ssljax: {' '.join(str(error).split())}", file=sys.stderr)  # one line, whatever the message's breaks
    sys.exit(2)


if __name__ == "__main__":
  run()
