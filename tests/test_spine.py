"""The trainer names no modality: a token objective with no `image` key and no BatchNorm, fed
by a family and evaluated by an evaluator defined here, trains end to end through `loop.train`,
checkpoints, resumes and is restored for evaluation from its workdir alone."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssljax import evaluators, interface, losses, objectives
from ssljax.interface import DATA_AXIS, Family, LossAux, Objective, TrainInput
from ssljax.train import defaults, evaluation, loop
from ssljax.train.metrics import read_metrics

VOCAB, LENGTH = 16, 12


class _TokenSource:
  """Sequences that count up modulo VOCAB from a random start: the next token is predictable."""

  def __init__(self, n: int):
    starts = np.random.default_rng(0).integers(0, VOCAB, n)
    self.tokens = (starts[:, None] + np.arange(LENGTH)) % VOCAB

  def __len__(self):
    return len(self.tokens)

  def __getitem__(self, i):
    return {"tokens": self.tokens[i]}

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def _record(record):
  return {"tokens": np.asarray(record["tokens"], np.int32)}


class _Bigram(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    h = nn.Embed(VOCAB, 8)(tokens)  # (B, T) -> (B, T, 8)
    return nn.Dense(VOCAB)(h), h  # (B, T, V), (B, T, 8)


_evaluator_calls = []

_FAMILY = Family(
    name="test_tokens",
    train_input=lambda config, wd: TrainInput(source=_TokenSource(256), record_fn=_record, unit="tokens",
                                              units_per_example=LENGTH),
)


@evaluators.register("test_parameter_count", scale=1)
def _parameter_count(context, options):
  """Counts the parameter arrays (times `scale`) and the calls, on the split it is given."""

  def run(params, model_state, split):
    _evaluator_calls.append(split)
    return {"split": split, "arrays": options.scale * len(jax.tree.leaves(params))}

  return evaluators.Evaluator(name="test_parameter_count", run=run, format=str,
                              scalars=lambda report: {"arrays": report["arrays"]})


@interface.register("test_next_token")
def _make(config):
  net = _Bigram()

  def init(key, batch):
    return net.init(key, batch["tokens"])["params"], {}

  def loss(params, model_state, batch, keys):
    logits, _ = net.apply({"params": params}, batch["tokens"])
    value = losses.next_token_loss(logits, batch["tokens"], axis_name=DATA_AXIS)
    return value, LossAux(model_state=model_state, metrics={})

  def features(params, model_state, batch):
    return jnp.mean(net.apply({"params": params}, batch["tokens"])[1], axis=1)

  return Objective(name="test_next_token", family=_FAMILY, init=init, loss=loss, features=features)


def _config(steps):
  c = defaults.base_config()
  c.objective = "test_next_token"
  c.data.name = "synthetic tokens"
  c.optim.name, c.optim.lr, c.optim.lr_scaling = "adamw", 0.1, "none"
  c.train.batch_size, c.train.steps = 16, steps
  c.train.log_every, c.train.checkpoint_every = 1, 5
  c.train.evaluate = False
  c.evals.arrays = evaluators.options("test_parameter_count", every=5, scale=2)
  return c


def test_a_token_objective_trains_resumes_and_restores_through_the_generic_loop(tmp_path):
  wd = str(tmp_path / "run")
  state = loop.train(_config(10), wd, progress=False)
  assert int(state.step) == 10
  history = read_metrics(wd)
  assert history[-1]["loss"] < 0.7 * history[0]["loss"], history
  assert "tokens_per_sec" in history[-1] and history[-1]["val_arrays_arrays"] == 6.0
  assert [m["step"] for m in history if "val_arrays_arrays" in m] == [5, 10]
  assert _evaluator_calls == ["validation", "validation"]

  # Resumes at 10 for 5 more steps: a longer run is another schedule, so it must be allowed.
  loop.train(_config(15), wd, progress=False, allow_config_change=True)
  assert [m["step"] for m in read_metrics(wd)] == list(range(1, 16))
  objective, params, model_state = objectives.restore_model(wd)
  assert objective.name == "test_next_token" and model_state == {}
  report = evaluation.evaluate_workdir(wd, verbose=False)
  assert report == {"objective": "test_next_token", "dataset": "synthetic tokens", "split": "test",
                    "arrays": {"split": "test", "arrays": 6}}
