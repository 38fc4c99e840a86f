"""The command line a new user meets: `--help` of every command, flags refused where they do not
belong, and each mistake of the user's ended by one line on stderr with exit status 2 and
nothing written. The command runs as a subprocess (`python -m ssljax.cli`, what the console
script runs), a few at a time: most of their time is spent importing Python modules."""

import concurrent.futures
import os
import re
import shlex
import subprocess
import sys

import pytest

from helpers import REPO, cli_env
from ssljax import cli
from ssljax.train.defaults import load_config
from ssljax.workdir import save_config
from test_readme import code_blocks

SMOKE = os.path.join(REPO, "configs", "simclr.py") + ":smoke"
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")


def run_all(argvs, data_dir: str, python_args=("-m", "ssljax.cli")) -> list:
  """`python -m ssljax.cli ARGV` for each argv (`python_args` replace `-m ssljax.cli`), as
  `run_cli` runs it, four at a time; the results in order."""
  # Without the restart into huge pages (tests/test_cli.py tests it): a second Python start each.
  env = {**cli_env(data_dir, devices=1), "SSLJAX_HUGE_PAGES": "0"}

  def run(argv):
    return subprocess.run([sys.executable, *python_args, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)

  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    return list(pool.map(run, argvs))


def _mentions(text: str, flag: str) -> bool:
  """Whether `text` names --flag (or --[no]flag), not as part of a longer name or of --config.KEY."""
  return re.search(rf"(?<![\w.-])--(\[no\])?{re.escape(flag)}(?![\w-])", text) is not None


def _collapsed(text: str) -> str:
  return " ".join(text.replace("\\\n", " ").split())


# --- help ------------------------------------------------------------------------------------------

def test_help_of_every_command_names_its_flags_defaults_and_examples_and_no_other_commands(tmp_path):
  asked = [[*command.name.split(), "--help"] for command in cli.COMMANDS]
  results = run_all([["--help"], ["bench", "--help"], ["tokenizer", "-h"], *asked], str(tmp_path))
  top, bench, tokenizer, *helps = results
  for result in (top, bench, tokenizer, *helps):
    assert result.returncode == 0 and result.stderr == "", result.stderr
  for command in cli.COMMANDS:  # `ssljax --help`: the commands, a line each, and the shared flags
    assert re.search(rf"^  {re.escape(command.name)} +{re.escape(command.summary)}$", top.stdout, re.M), command.name
  for flag in cli.SHARED_FLAGS:
    assert _mentions(top.stdout, flag), flag
  assert "bench step" in bench.stdout and "bench import" in bench.stdout and "generate" not in bench.stdout
  assert "tokenizer train" in tokenizer.stdout
  for command, result in zip(cli.COMMANDS, helps):
    shown = result.stdout
    assert shown.startswith(f"usage: ssljax {command.name}"), shown[:200]
    for flag in command.flags:
      assert _mentions(shown, flag), (command.name, flag)
      default = cli.flags.FLAGS[flag].default
      if default is not None:
        assert f"(default: {cli._shown_default(default)})" in _collapsed(shown), (command.name, flag)
    others = {flag for flag in cli.OWNERS if flag not in command.flags}
    assert [flag for flag in others if _mentions(shown, flag)] == [], command.name
    for example in command.examples:
      assert example in shown, (command.name, example)


def test_the_readme_lists_the_commands_as_help_does():
  with open(README) as f:
    readme = f.read()
  assert cli.markdown_commands() in readme, "paste ssljax.cli.markdown_commands() into the README's usage section"


def test_examples_come_from_the_readme_or_docs_and_pass_the_command_line_checks():
  texts = [open(README).read()] + [open(os.path.join(DOCS, n)).read() for n in sorted(os.listdir(DOCS))
                                    if n.endswith(".md")]
  written = " ".join(_collapsed(text) for text in texts)
  for command in cli.COMMANDS:
    assert 1 <= len(command.examples) <= 2, command.name
    for example in command.examples:
      assert example in written, example
      args = shlex.split(example)[1:]
      named, words = cli.command_of(args)
      assert named == command, example
      cli.check_flags_belong(command, args[words:])


def test_the_readme_commands_use_only_their_commands_flags():
  """Every `ssljax` line in a code block of README.md passes the check of misplaced flags."""
  lines = [line for block in code_blocks(open(README).read()) for line in block if line.startswith("ssljax ")]
  assert lines
  for line in lines:
    args = shlex.split(line, comments=True)[1:]
    command, words = cli.command_of(args)
    cli.check_flags_belong(command, args[words:])


def test_a_flag_belongs_to_every_command_that_lists_it():
  assert cli.OWNERS["prompt"] == ("generate",)
  assert set(cli.OWNERS["config"]) == {"train", "finetune", "tokenizer train", "import", "bench step",
                                       "bench input", "bench memory"}
  for name in [*cli.OWNERS, *cli.SHARED_FLAGS]:
    assert name in cli.flags.FLAGS, name  # each names a flag the command line defines
  assert not set(cli.OWNERS) & set(cli.SHARED_FLAGS)
  assert set(cli.RUNNERS) == {command.name for command in cli.COMMANDS}


# --- mistakes of the user's ---------------------------------------------------------------------------

def _run_without_checkpoint(workdir: str) -> None:
  """A workdir with a run's config.json and no checkpoint: nothing to restore."""
  os.makedirs(workdir)
  save_config(load_config(SMOKE), workdir)


# id: (arguments, with {run} for a workdir that must stay as it was; what the line must say)
MISTAKES = {
    "unknown_variant": (["train", "--config", SMOKE[:-1], "--workdir", "{run}"],
                        ["unknown simclr variant 'smok'", "did you mean 'smoke'"]),
    "workdir_not_a_run": (["eval", "--workdir", "{run}"],
                          ["config.json does not exist", "workdir of an `ssljax train`"]),
    "config_file_missing": (["train", "--config", "configs/nope.py:smoke", "--workdir", "{run}"],
                            ["there is no file configs/nope.py", "configs/simclr.py:mnist5k"]),
    "flag_of_another_command": (["train", "--config", SMOKE, "--workdir", "{run}", "--prompt", "Hello"],
                                ["--prompt is a flag of 'ssljax generate', not of 'ssljax train'"]),
    "mistyped_flag": (["generate", "--workdir", "{run}", "--promt", "Hello"],
                      ["unknown flag --promt", "did you mean --prompt?"]),
    "mistyped_command": (["trian", "--workdir", "{run}"], ["unknown command 'trian'", "did you mean train?"]),
    "bad_flag_value": (["generate", "--workdir", "{run}", "--prompt", "Hi", "--num_samples=some"],
                       ["--num_samples=some"]),
    "required_flag_missing": (["eval"], ["'ssljax eval' needs --workdir DIR"]),
    "stray_argument": (["export", "--workdir", "{run}", "--format", "hf"], ["'ssljax export' takes OUT"]),
    # The README's bad input: an unknown key, a value of the wrong type, an impossible value, a
    # dataset that is not prepared (offline).
    "unknown_key": (["train", "--config", SMOKE, "--workdir", "{run}", "--config.train.stepz=3"],
                    ["no such key: stepz", "steps"]),
    "wrong_type": (["train", "--config", SMOKE, "--workdir", "{run}", "--config.train.steps=many"],
                   ["--config.train.steps=many"]),
    "impossible_value": (["train", "--config", SMOKE, "--workdir", "{run}", "--config.train.steps=0"],
                         ["config.train.steps"]),
    "dataset_not_prepared": (["train", "--config", SMOKE, "--workdir", "{run}", "--config.data.name=cifar10"],
                             ["Dataset 'cifar10' is not prepared", "tfds build cifar10"]),
    "checkpoint_missing": (["eval", "--workdir", "{prepared}"], ["no checkpoint in", "that saved one"]),
    "checkpoint_unreadable": (["eval", "--workdir", "{corrupt}"],
                              ["cannot read the checkpoint of step 3", "restore an intact copy"]),
    "unknown_finetune_task": (["train", "--config", "configs/finetune.py:bbc_topc", "--workdir", "{run}"],
                              ["unknown fine-tuning task 'bbc_topc'", "did you mean 'bbc_topic'"]),
}


def test_each_mistake_ends_in_one_line_exit_2_no_traceback_and_nothing_written(tmp_path):
  prepared, corrupt = str(tmp_path / "prepared"), str(tmp_path / "corrupt")
  _run_without_checkpoint(prepared)
  _run_without_checkpoint(corrupt)
  os.makedirs(os.path.join(corrupt, "checkpoints", "3", "state"))  # a step whose files are gone
  runs = {name: str(tmp_path / name) for name in MISTAKES}
  argvs = [[a.format(run=runs[name], prepared=prepared, corrupt=corrupt) for a in args]
           for name, (args, _) in MISTAKES.items()]
  # the datasets' directory is empty: cifar10 is not prepared, and no case gets as far as mnist5k
  for name, result in zip(MISTAKES, run_all(argvs, str(tmp_path / "tfds"))):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (name, result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("ssljax: "), (name, result.stderr[-3000:])
    for part in MISTAKES[name][1]:
      assert part in lines[0], (name, part, lines[0])
    assert not os.path.exists(runs[name]), (name, os.listdir(runs[name]))
  assert os.listdir(prepared) == ["config.json"]
  assert sorted(os.listdir(corrupt)) == ["checkpoints", "config.json"]
  assert os.listdir(os.path.join(corrupt, "checkpoints", "3", "state")) == []


def test_a_checkpoint_that_cannot_be_read_is_the_users_error_naming_the_step(tmp_path):
  """What `ssljax eval` (and generate, zero-shot, finetune) reads a run's state with."""
  from ssljax import workdir

  os.makedirs(tmp_path / "checkpoints" / "3" / "state")  # a step whose files are gone
  with pytest.raises(cli.UserError, match="cannot read the checkpoint of step 3 in .*checkpoints .*FileNotFoundError"):
    workdir.restore_state(str(tmp_path), None, None)


def test_verbose_adds_the_traceback_and_an_internal_error_keeps_its_own(tmp_path):
  """A UserError under --verbose: its traceback, then the same line, status 2. Any other
  exception (a fault of ssljax's, here put into the checks of `ssljax plot`'s command line) is
  not caught: Python's traceback and status 1."""
  fault = ("import sys; from ssljax import cli\n"
           "def fault(command, arguments): raise RuntimeError('a fault inside ssljax')\n"
           "cli.check_command_line = fault; sys.argv = ['ssljax', 'plot', '--workdir', 'runs/x']; cli.run()")
  verbose, = run_all([["trian", "--verbose"]], str(tmp_path))
  internal, = run_all([[fault]], str(tmp_path), python_args=("-c",))
  assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "UserError" in verbose.stderr
  assert verbose.stderr.strip().splitlines()[-1].startswith("ssljax: unknown command 'trian'")
  assert internal.returncode == 1, internal.stderr[-3000:]
  assert "Traceback" in internal.stderr and internal.stderr.strip().endswith("RuntimeError: a fault inside ssljax")


def test_no_command_shows_the_commands_and_exits_2(tmp_path):
  result, = run_all([[]], str(tmp_path))
  assert result.returncode == 2 and result.stdout == ""
  assert "usage: ssljax COMMAND" in result.stderr and "bench step" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--preset", "x"], "--preset is a flag of 'ssljax bench step', not of 'ssljax train'"),
    (["eval", "--config.train.steps=3"], "--config.train.steps is a flag of 'ssljax train'"),
    (["bench", "input", "--param_sharding=fsdp"], "--param_sharding is a flag of 'ssljax bench memory'"),
    (["train", "--noprogress", "--nomarkdown"], "--nomarkdown is a flag of 'ssljax table'"),
    (["generate", "--bench_steps", "3"], "'ssljax bench step', 'ssljax bench input'"),
])
def test_a_flag_of_another_command_is_named_with_its_commands(args, message):
  command, words = cli.command_of(args)
  with pytest.raises(cli.UserError, match=re.escape(message)):
    cli.check_flags_belong(command, args[words:])


def test_a_commands_own_and_shared_flags_and_values_pass():
  args = ["generate", "--prompt", "Hi", "--noverbose", "--seed=3", "--top_p", "-1", "--", "--image"]
  command, words = cli.command_of(args)
  assert command.name == "generate" and words == 1
  cli.check_flags_belong(command, args[words:])  # "-1" is a value; after "--" nothing is a flag


@pytest.mark.parametrize("args, message", [
    ([], "expected a command"),
    (["bench"], "'ssljax bench' takes one of step, input, memory, import"),
    (["bench", "stpe"], "not 'stpe'; did you mean step?"),
    (["tokenizer", "trian"], "did you mean train?"),
    (["evaluate"], "unknown command 'evaluate'; did you mean eval?"),
])
def test_a_missing_or_mistyped_command_is_named(args, message):
  with pytest.raises(cli.UserError, match=re.escape(message)):
    cli.command_of(args)
