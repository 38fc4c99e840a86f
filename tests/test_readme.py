"""The README's commands run as written. Every line of a fenced code block that starts with
`ssljax` runs as a subprocess in a smoke version of itself (the config's `smoke` variant or a
few steps, the workdir in a temporary directory), block by block and in the README's order, so
that `eval`, `finetune`, `generate` and `zero-shot` read the run that the block's `train` wrote.
Each must exit 0 and print what the README says it prints. The two top commands (installing, then
the main job or the test suite) are not run here: CI runs the test command, and this file checks
that it is the one `.ci/run` runs."""

import os
import re
import shlex

import pytest
from PIL import Image

from helpers import REPO, run_cli
from ssljax.train.defaults import load_config
from test_own_data import review_rows, write_csv, write_images

README = os.path.join(REPO, "README.md")
CI_SCRIPT = os.path.join(REPO, ".ci", "run")

# What a command prints, as the README quotes it (the first line of its table or report).
TRAIN_PRINTS = {
    "simclr": "Evaluation of simclr on mnist5k (test split)",
    "gpt": "Evaluation of gpt on bbc_news (test split)",
    "bert": "Evaluation of bert on bbc_news (test split)",
    "clip": "Evaluation of clip on shapes (test split)",
}
# Overrides that make a README command a few seconds long on the smoke runs. `ssljax finetune`:
# a few dozen examples, one epoch, a few steps per learning rate.
SMOKE_EXTRA = {
    "train": ["--noprogress"],
    "table": ["--variant", "smoke", "--objectives", "rotation", "--noprogress"],
    "finetune": ["--noprogress", "--config.max_train_examples=48", "--config.max_eval_examples=24",
                 "--config.batch_size=8", "--config.few_label_batch_size=0", "--config.eval_batch_size=16",
                 "--config.epochs=1", "--config.min_steps=3", "--config.lrs=(1e-4,3e-4)"],
    "generate": ["--max_new_tokens", "8"],
}
# Flags whose value is a path of the user's: the smoke version reads (and the test writes) it
# under the test's temporary directory.
PATH_FLAGS = ("--workdir", "--image", "--config.data.path", "--config.data_path")
# Overrides a README command may show that would make its smoke version long.
DROPPED_OVERRIDES = ("--config.train.steps=",)


def _readme_text() -> str:
  with open(README) as f:
    return f.read()


def code_blocks(text: str) -> list[list[str]]:
  """The lines of each fenced code block of a Markdown text, in order."""
  blocks, current = [], None
  for line in text.splitlines():
    if line.lstrip().startswith("```"):
      if current is None:
        current = []
      else:
        blocks.append(current)
        current = None
    elif current is not None:
      current.append(line)
  assert current is None, "an unclosed code block in README.md"
  return blocks


def readme_command_blocks() -> list[list[list[str]]]:
  """The `ssljax` commands of each code block that has any, each split into its arguments."""
  blocks = []
  for lines in code_blocks(_readme_text()):
    commands = [shlex.split(line, comments=True) for line in lines if line.startswith("ssljax ")]
    if commands:
      blocks.append(commands)
  return blocks


def _flag(argv: list[str], name: str) -> str | None:
  """The value of `--name VALUE` or `--name=VALUE` in argv, or None."""
  for i, arg in enumerate(argv):
    if arg == name and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith(name + "="):
      return arg.split("=", 1)[1]
  return None


def _config_stem(spec: str) -> str:
  """"configs/gpt.py:smoke" -> "gpt"."""
  return os.path.basename(spec.partition(":")[0])[: -len(".py")]


def smoke_version(argv: list[str], root: str) -> list[str]:
  """The arguments (after `ssljax`) of a README command's smoke version: a `--config` file's
  variant replaced by `smoke`, `--workdir` and `--image` paths moved under `root`, overrides that
  set a long run dropped, and SMOKE_EXTRA's flags added."""
  command, args, out = argv[1], argv[2:], []
  i = 0
  while i < len(args):
    arg = args[i]
    name, has_value, value = arg.partition("=")
    if name in ("--config", *PATH_FLAGS) and not has_value:
      value, i = args[i + 1], i + 1
    if name == "--config":
      out.append(f"--config={os.path.join(REPO, value.partition(':')[0])}:smoke")
    elif name in PATH_FLAGS:
      out.append(f"{name}={os.path.join(root, value)}")
    elif not arg.startswith(DROPPED_OVERRIDES):
      out.append(arg)
    i += 1
  return [command, *out, *SMOKE_EXTRA.get(command, [])]


def expected_output(argv: list[str], objective_of_workdir: dict) -> list[str]:
  """What the README says `argv` prints: one or more strings its stdout must contain."""
  command = argv[1]
  if command == "train":
    printed = TRAIN_PRINTS[_config_stem(_flag(argv, "--config"))]
    own_data = _flag(argv, "--config.data.name")
    if own_data:  # "Evaluation of simclr on mnist5k (test split" -> "... on image_folder (test split"
      before, _, after = printed.partition(" on ")
      printed = f"{before} on {own_data} ({after.partition(' (')[2]}"
    return [printed]
  if command == "table":
    return [f"Evaluation on {_flag(argv, '--dataset') or 'mnist5k'} ({_flag(argv, '--split') or 'test'} split)"]
  if command == "eval":
    objective = objective_of_workdir.get(_flag(argv, "--workdir"))
    assert objective in ("simclr", "byol", "vicreg", "rotation"), (
        "only image runs' `ssljax eval` output is known to this test; add what the others print")
    return [f"Evaluation of {objective} on mnist5k ({_flag(argv, '--split') or 'test'} split)"]
  if command == "finetune":
    return [f"Fine-tuning {_flag(argv, '--task')}"]
  if command == "plot":
    return ["wrote"]
  if command == "generate":
    return [_flag(argv, "--prompt"), "\n---"]  # each continuation after its prompt, then a rule
  if command == "zero-shot":
    return [label.strip() for label in _flag(argv, "--labels").split(",")]
  raise AssertionError(f"the README shows `ssljax {command}`, whose output this test does not know yet")


def _write_image(path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new("RGB", (32, 32), (200, 30, 30)).save(path)


def _write_documents(pattern: str, count: int = 60) -> None:
  """`count` short .txt documents of a few sentences where the glob `pattern` finds them."""
  folder = os.path.dirname(pattern)
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    sentences = [f"Report {i} covers topic {i % 5} in some detail." , f"The second sentence of report {i} adds a fact.",
                 f"Its third sentence names the number {i * 7}.", "A last sentence closes the report."]
    with open(os.path.join(folder, f"report_{i:03d}.txt"), "w") as f:
      f.write(" ".join(sentences))


def write_user_files(argv: list[str], root: str) -> None:
  """The files a README command names as the user's own (images, documents, a CSV), written under
  `root` where its smoke version reads them."""
  image = _flag(argv, "--image")
  if image:
    _write_image(os.path.join(root, image))
  path, name = _flag(argv, "--config.data.path"), _flag(argv, "--config.data.name")
  if name == "image_folder":
    write_images(os.path.join(root, path), count_per_class=(30, 30, 30))  # 10 labels a class to probe with
  elif name == "text_files":
    _write_documents(os.path.join(root, path))
  table = _flag(argv, "--config.data_path")
  if table:
    write_csv(os.path.join(root, table), review_rows(60))


BLOCKS = readme_command_blocks()


def _block_id(block: list[list[str]]) -> str:
  first = block[0]
  config = _flag(first, "--config")
  return "-".join([first[1], *([_config_stem(config)] if config else [])])


def test_the_readme_shows_few_commands():
  """A user guide, not a catalogue: every command shown costs this file a subprocess."""
  assert 1 <= sum(len(block) for block in BLOCKS) <= 14, [" ".join(c) for b in BLOCKS for c in b]


@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_readme_commands_run_as_smoke_versions(block, tmp_path, data_dir):
  readme = " ".join(_readme_text().split())  # the prose, whatever its line breaks
  objective_of_workdir = {}
  for argv in block:
    config = _flag(argv, "--config")
    if config:  # the README's own variant must exist, though its smoke version runs
      load_config(os.path.join(REPO, config))
    if argv[1] == "train":
      objective_of_workdir[_flag(argv, "--workdir")] = _config_stem(config)
    write_user_files(argv, str(tmp_path))
    expected = expected_output(argv, objective_of_workdir)
    for text in expected:
      if argv[1] not in ("generate", "zero-shot"):  # these echo the command's own arguments
        assert text in readme, f"the README should say that `{' '.join(argv)}` prints {text!r}"
    result = run_cli(smoke_version(argv, str(tmp_path)), data_dir)
    shown = " ".join(argv)
    assert result.returncode == 0, f"`{shown}` (smoke version) failed:\n{result.stderr[-3000:]}"
    for text in expected:
      assert text in result.stdout, f"`{shown}` did not print {text!r}:\n{result.stdout[-3000:]}"


def _ci_command(prefix: str) -> str:
  with open(CI_SCRIPT) as f:
    lines = [line.strip() for line in f if line.strip().startswith(prefix)]
  assert len(lines) == 1, (prefix, lines)
  return lines[0]


def test_the_readme_test_command_is_what_ci_runs():
  commands = [line for block in code_blocks(_readme_text()) for line in block if 'pip install -e ".[test]"' in line]
  assert len(commands) == 1, commands
  steps = [step.strip() for step in commands[0].split("&&")]
  assert steps[-1] == _ci_command("python -m pytest"), (steps[-1], _ci_command("python -m pytest"))
  assert '-e ".[test]"' in _ci_command("python -m pip install -q -e")
  assert steps[:2] == ["python3.11 -m venv .venv", ". .venv/bin/activate"]


def test_the_readme_main_command_names_a_config_that_exists():
  """The main job is run by hand, not here (it takes minutes); its config and what it prints are
  checked."""
  commands = [line for block in code_blocks(_readme_text()) for line in block if "pip install -e . &&" in line]
  assert len(commands) == 1, commands
  argv = shlex.split(commands[0].split("&&")[-1])
  assert argv[:2] == ["ssljax", "train"] and _flag(argv, "--workdir")
  config = load_config(os.path.join(REPO, _flag(argv, "--config")))
  assert config.objective == "simclr" and config.data.name == "mnist5k"
  assert TRAIN_PRINTS["simclr"] in " ".join(_readme_text().split())


def _markdown_files() -> list[str]:
  docs = os.path.join(REPO, "docs")
  return [README] + sorted(os.path.join(docs, name) for name in os.listdir(docs) if name.endswith(".md"))


def test_links_between_the_readme_and_docs_lead_to_files():
  for path in _markdown_files():
    with open(path) as f:
      text = f.read()
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text):
      if "://" not in target:
        assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)


def test_no_code_comment_points_at_a_readme_section():
  """The README is rewritten as the code changes: a comment names a docs page instead."""
  # The file's name before a comma or colon and a quoted section (or the line's end), in
  # brackets, or after "of the"; written in two parts so that this line does not match.
  pointer = re.compile("READ" + r"ME\s*[,:]\s*(\"|$)| \(READ" + r"ME\)|of the READ" + r"ME\b")
  for top in ("ssljax", "configs", "tests"):
    for directory, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        if name.endswith(".py"):
          with open(os.path.join(directory, name)) as f:
            for number, line in enumerate(f, 1):
              assert not pointer.search(line), f"{os.path.join(directory, name)}:{number}: {line.strip()}"
