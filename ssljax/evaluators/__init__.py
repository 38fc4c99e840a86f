"""Evaluators: what a run reports, chosen by the config (as big_vision's `evaluators/`).

`config.evals` names the evaluations of a run, each with its options:

    c.evals.knn = evaluators.options("knn", every=500)   # every 500 steps on validation
    c.evals.linear_probe = evaluators.options("linear_probe")  # at the end only (every=0)

The trainer runs each evaluator with `every > 0` on the validation split (`config.data.eval_split`)
every `every` steps and logs its scalars ("val_knn_accuracy"); `ssljax eval`, and the end of
`ssljax train`, run them all once on the test split and write the report (`eval.json`). An
entry says which evaluator it runs in `type` (`options` sets it), so two entries may run one
evaluator with different options: `c.evals.knn_5 = evaluators.options("knn", k=5)`.

Every evaluator is made the same way, `make(context, options) -> Evaluator`, from the run's
objective (its `features` and `extras`: what it predicts), config and workdir; it reads the data
itself. What a round of evaluators shares (the features of a split under the current
parameters) and what lasts for the run (a baseline's features, a tokenised split) is kept in the
`Context`, so the kNN and the probes extract each split's features once.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Mapping

import ml_collections

from ssljax.text import tokenizer as tokenizer_lib

Params = Any
ModelState = Any


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One evaluation of a run.

  Attributes:
    name: its entry in `config.evals`, the key of its report in eval.json.
    run: (params, model_state, split) -> its report on the split (JSON-ready).
    format: report -> printable lines.
    scalars: report -> the scalars the trainer logs when it runs during training ("accuracy").
    every: steps between runs on the validation split during training; 0: only at the end.
  """

  name: str
  run: Callable[[Params, ModelState, str], dict]
  format: Callable[[dict], str]
  scalars: Callable[[dict], Mapping[str, float]]
  every: int = 0


class Context:
  """What every evaluator of a run is made from, and the work they share.

  `shared(key, make)` computes `make()` once per round (one set of parameters on one split: the
  features of the split under the current parameters); `lasting(key, make)` once per run (what
  does not depend on the parameters: a baseline's features, a tokenised split, n-gram counts).
  """

  def __init__(self, objective, config: ml_collections.ConfigDict, workdir: str):
    self.objective, self.config, self.workdir = objective, config, workdir
    self._round: dict = {}
    self._lasting: dict = {}

  def shared(self, key, make: Callable[[], Any]):
    if key not in self._round:
      self._round[key] = make()
    return self._round[key]

  def lasting(self, key, make: Callable[[], Any]):
    if key not in self._lasting:
      self._lasting[key] = make()
    return self._lasting[key]

  def new_round(self) -> None:
    self._round.clear()

  def tokenizer(self) -> tokenizer_lib.Tokenizer:
    """The tokenizer the run trained with, as its family saved it in the workdir (text and
    image-text runs), loaded once per run."""
    return self.lasting("tokenizer", lambda: tokenizer_lib.load(self.workdir))


Make = Callable[[Context, ml_collections.ConfigDict], Evaluator]


@dataclasses.dataclass(frozen=True)
class _Entry:
  make: Make
  options: Mapping[str, Any]


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, **defaults) -> Callable[[Make], Make]:
  """Decorator: `config.evals.<name>` (or an entry of `type=name`) makes its evaluator with
  `make(context, options)`; `defaults` are its options and their defaults (besides `every`)."""

  def add(make: Make) -> Make:
    if name in _REGISTRY:
      raise ValueError(f"evaluator {name!r} is registered twice")
    _REGISTRY[name] = _Entry(make, {"every": 0, **defaults})
    return make

  return add


def names() -> list[str]:
  _register_bundled()
  return sorted(_REGISTRY)


def _entry(kind: str, where: str) -> _Entry:
  _register_bundled()
  if kind not in _REGISTRY:
    raise ValueError(f"{where}: unknown evaluator {kind!r}; registered evaluators: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[kind]


def options(name: str, **overrides) -> ml_collections.ConfigDict:
  """The options of evaluator `name` with their defaults, `overrides` applied, and `type=name`:
  what a config puts under `config.evals` (every option present, so each can be set from the
  command line)."""
  where = f"evaluators.options({name!r})"
  defaults = dict(_entry(name, where).options)
  _check_options(name, overrides, defaults, where)
  if overrides.get("type", name) != name:
    raise ValueError(f"{where}: type={overrides['type']!r} contradicts the evaluator named")
  return ml_collections.ConfigDict({"type": name, **defaults, **overrides})


def _check_options(kind: str, given: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> None:
  for key in sorted(set(given) - set(defaults) - {"type"}):
    close = difflib.get_close_matches(key, defaults, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{where}: {key!r} is not an option of the {kind!r} evaluator (its options: "
                     f"{', '.join(sorted(defaults))}){hint}")


def _entries(config: ml_collections.ConfigDict):
  """(name, where, registry entry, options with their defaults) of each entry of config.evals; a
  ValueError names an unknown evaluator or option."""
  for name, given in config.get("evals", {}).items():
    given = dict(given)
    where = f"config.evals.{name}"
    kind = given.get("type", name)
    entry = _entry(kind, where)
    _check_options(kind, given, entry.options, where)
    opts = ml_collections.ConfigDict({**entry.options, **{k: v for k, v in given.items() if k != "type"}})
    if opts.every < 0:
      raise ValueError(f"{where}.every must be >= 0 (0: only at the end), got {opts.every}")
    yield name, where, entry, opts


def check_options(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming an unknown evaluator, an unknown option or a negative `every`
  in config.evals (what the values mean, each evaluator checks when it is made)."""
  for _ in _entries(config):
    pass


def from_config(objective, config: ml_collections.ConfigDict, workdir: str) -> "Evaluation":
  """The evaluators `config.evals` names, in its order, made for `objective`'s run in `workdir`."""
  context = Context(objective, config, workdir)
  made = []
  for name, _, entry, opts in _entries(config):
    evaluator = entry.make(context, opts)
    made.append(dataclasses.replace(evaluator, name=name, every=int(opts.every)))
  return Evaluation(made, context)


class Evaluation:
  """A run's evaluators and the Context they share."""

  def __init__(self, evaluators: list[Evaluator], context: Context):
    self.evaluators, self.context = evaluators, context

  def due(self, step: int, last_step: int) -> list[Evaluator]:
    """The evaluators that run on the validation split after training step `step`."""
    return [e for e in self.evaluators if e.every and (step % e.every == 0 or step == last_step)]

  def run(self, params, model_state, split: str, evaluators: list[Evaluator] | None = None) -> dict[str, dict]:
    """{name: report} of the evaluators (default: all) on `split` under the given parameters:
    one round, whose shared work is dropped when it ends."""
    self.context.new_round()
    try:
      return {e.name: e.run(params, model_state, split) for e in (evaluators or self.evaluators)}
    finally:
      self.context.new_round()

  def scalars(self, reports: Mapping[str, dict], prefix: str = "val_") -> dict[str, float]:
    """The scalars to log of a round's reports: "val_<evaluator>_<scalar>"."""
    out = {}
    for e in self.evaluators:
      if e.name in reports:
        for key, value in e.scalars(reports[e.name]).items():
          out[f"{prefix}{e.name}_{key}"] = float(value)
    return out

  def format(self, report: Mapping[str, Any]) -> str:
    """The printed report: a header, then each evaluator's section."""
    header = f"Evaluation of {report['objective']} on {report['dataset']} ({report['split']} split)"
    return "\n\n".join([header] + [e.format(report[e.name]) for e in self.evaluators if e.name in report])


def _register_bundled() -> None:
  """Imports every module of this package: each registers the evaluators it defines."""
  import importlib
  import pkgutil

  for module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{module.name}")
