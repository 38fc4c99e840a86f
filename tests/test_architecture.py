"""The import order that ssljax/ARCHITECTURE.md states, checked from the code: every module of
the package is read with `ast`, and an import of a room on a higher floor (or of a different room
on the same floor) fails the test with the file, the line and the import."""

from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ssljax"

# Floors from the ground up; a room may import rooms on lower floors and itself. A room is a
# module or subpackage directly under ssljax/ (ssljax.models, ssljax.workdir, ...).
FLOORS = (
    ("interface", "errors"),
    ("losses",),
    ("models", "augment", "text"),
    ("data", "workdir"),
    ("evaluate", "downstream"),
    ("families",),
    ("objectives", "evaluators"),
    ("train",),
    ("commands", "finetune", "table", "bench", "convert"),
    ("cli",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
# An objective shares pieces only through this module, never by importing another objective.
OBJECTIVES_SHARED = "ssljax.objectives.common"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path):
  """(line, absolute module name) of every `import ssljax...` and `from ... import` in a file,
  relative imports resolved; `from ssljax import x` counts as importing ssljax.x."""
  name = module_name(path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module or ""
      for alias in node.names:  # `from ssljax.objectives import bert` imports ssljax.objectives.bert
        submodule = f"{module}.{alias.name}"
        yield node.lineno, submodule if module == "ssljax" or _is_module(submodule) else module


def _is_module(name: str) -> bool:
  """Whether a dotted name is a module or package of this tree (not a name defined in one)."""
  path = PACKAGE.parent.joinpath(*name.split("."))
  return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def room(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if parts[0] == "ssljax" and len(parts) > 1 else None


def violations() -> list[str]:
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    here = room(module_name(path))
    if here is None:  # ssljax/__init__.py
      continue
    for line, module in imported_modules(path):
      there = room(module)
      if there is None or there == here:
        continue
      if FLOOR[there] >= FLOOR[here]:
        found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} (floor {FLOOR[here]}) imports "
                     f"{module} (floor {FLOOR[there]})")
  return found


def objectives_importing_objectives() -> list[str]:
  found = []
  for path in sorted((PACKAGE / "objectives").glob("*.py")):
    if path.name == "__init__.py":  # the registry: importing the modules registers them
      continue
    for line, module in imported_modules(path):
      if module.startswith("ssljax.objectives.") and module != OBJECTIVES_SHARED:
        found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}")
  return found


def missing_modules() -> list[str]:
  """Imports of an ssljax module that does not exist (a module moved without its importers)."""
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for line, module in imported_modules(path):
      if module.startswith("ssljax.") and not _is_module(module):
        found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
  return found


def test_every_import_of_the_package_names_a_module_that_exists():
  assert missing_modules() == []


def test_every_room_of_the_package_has_a_floor():
  rooms = {room(module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
  assert rooms == set(FLOOR), f"rooms without a floor: {rooms - set(FLOOR)}; floors without a room: {set(FLOOR) - rooms}"


def test_imports_only_point_down():
  assert violations() == []


def test_an_objective_imports_no_other_objective():
  assert objectives_importing_objectives() == []


def test_the_check_finds_an_import_that_points_up(tmp_path, monkeypatch):
  """The check can fail: a losses module that imports the trainer is reported."""
  fake = tmp_path / "ssljax"
  (fake / "losses").mkdir(parents=True)
  (fake / "train").mkdir()
  (fake / "losses" / "bad.py").write_text("import jax\nfrom ssljax.train import loop\nfrom ssljax import models\n")
  (fake / "train" / "ok.py").write_text("from ssljax.losses import bad\nfrom . import ok\nfrom ssljax.train.gone import x\n")
  (fake / "objectives").mkdir()
  (fake / "objectives" / "bert.py").write_text("from ssljax.objectives import common\nfrom .gpt import config\n")
  for package in ("", "losses", "train", "objectives", "models"):
    (fake / package).mkdir(exist_ok=True)
    (fake / package / "__init__.py").write_text("")
  (fake / "objectives" / "common.py").write_text("")
  monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
  assert violations() == ["ssljax/losses/bad.py:2: losses (floor 1) imports ssljax.train (floor 7)",
                          "ssljax/losses/bad.py:3: losses (floor 1) imports ssljax.models (floor 2)"]
  assert objectives_importing_objectives() == ["ssljax/objectives/bert.py:2: imports ssljax.objectives.gpt"]
  assert missing_modules() == ["ssljax/objectives/bert.py:2: ssljax.objectives.gpt", "ssljax/train/ok.py:3: ssljax.train.gone"]


def test_architecture_md_states_the_same_floors():
  """ARCHITECTURE.md's list of rooms, read top to bottom, is the order of FLOORS, reversed."""
  text = (PACKAGE / "ARCHITECTURE.md").read_text()
  block = text.split("## Rooms and the direction of imports", 1)[1].split("```")[1]
  stated = []
  for line in block.splitlines():
    match = re.match(r"(\d+)\s+(.*)", line.strip())
    if match:
      rooms = tuple(re.sub(r"ssljax/|/|\.py", "", r) for r in re.findall(r"ssljax/[\w./]+", match.group(2)))
      stated.append((int(match.group(1)), rooms))
  assert [rooms for _, rooms in sorted(stated)] == [tuple(r) for r in FLOORS]
