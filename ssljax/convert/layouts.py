"""How a tensor of a Hugging Face checkpoint becomes a parameter of ssljax's and back.

A `Rule` pairs one of ssljax's parameters (a "/" path in the params tree) with the tensor(s) it
comes from, and holds both directions of the conversion. Import and export walk the same list of
rules, so an export read back by an import gives the same parameters bit for bit: every rule is
made of transposes, reshapes, stacks, row swaps and zero-padding of vocabulary rows, all exact.

The layouts (PyTorch's `nn.Linear` stores (out, in), Flax's `Dense` (in, out); GPT-2's `Conv1D`
already (in, out)):

  ssljax                                      Hugging Face
  attention/qkv/kernel   (D, 3, N, H)         q, k, v Linear weights, 3 x (D, D), or GPT-2's
                                              fused c_attn (D, 3D)
  attention/out/kernel   (N, H, D)            out Linear (D, D)
  Dense kernel           (in, out)            Linear (out, in)
  token_embed/embedding  (V, D), V a multiple of 128    (V0, D), V0 the real vocabulary
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from ssljax.convert.hf_files import ConversionError, Tensors


@dataclasses.dataclass(frozen=True)
class Rule:
  """ssljax's parameter `ours` made from the tensors `theirs` (`load`), and back (`save`)."""

  ours: str
  theirs: tuple[str, ...]
  load: Callable[[list[np.ndarray]], np.ndarray]
  save: Callable[[np.ndarray], list[np.ndarray]]
  shapes: tuple[tuple[int, ...], ...]  # of `theirs`, as config.json implies them


def copy(ours: str, theirs: str, shape: Sequence[int]) -> Rule:
  return Rule(ours, (theirs,), lambda t: t[0], lambda a: [a], (tuple(shape),))


def norm(ours: str, theirs: str, width: int) -> list[Rule]:
  """A LayerNorm: weight -> scale, bias -> bias."""
  return [copy(f"{ours}/scale", f"{theirs}.weight", (width,)), copy(f"{ours}/bias", f"{theirs}.bias", (width,))]


def linear(ours: str, theirs: str, d_in: int, d_out: int, bias: bool = True) -> list[Rule]:
  """A PyTorch Linear (weight (out, in)) as a Flax Dense (kernel (in, out))."""
  rules = [Rule(f"{ours}/kernel", (f"{theirs}.weight",), lambda t: t[0].T, lambda a: [a.T], ((d_out, d_in),))]
  return rules + ([copy(f"{ours}/bias", f"{theirs}.bias", (d_out,))] if bias else [])


def conv1d(ours: str, theirs: str, d_in: int, d_out: int) -> list[Rule]:
  """GPT-2's Conv1D, whose weight is already (in, out)."""
  return [copy(f"{ours}/kernel", f"{theirs}.weight", (d_in, d_out)), copy(f"{ours}/bias", f"{theirs}.bias", (d_out,))]


def separate_qkv(ours: str, theirs: Sequence[str], width: int, heads: int) -> list[Rule]:
  """Three Linear projections (query, key, value) as one (D, 3, N, H) kernel and (3, N, H) bias."""
  head_dim = width // heads
  kernel = Rule(
      f"{ours}/kernel", tuple(f"{t}.weight" for t in theirs),
      lambda t: np.stack([w.T for w in t], axis=1).reshape(width, 3, heads, head_dim),  # 3 x (D, D) -> (D, 3, N, H)
      lambda a: [a[:, i].reshape(width, width).T for i in range(3)],
      ((width, width),) * 3)
  bias = Rule(
      f"{ours}/bias", tuple(f"{t}.bias" for t in theirs),
      lambda t: np.stack(t).reshape(3, heads, head_dim),  # 3 x (D,) -> (3, N, H)
      lambda a: [a[i].reshape(width) for i in range(3)],
      ((width,),) * 3)
  return [kernel, bias]


def fused_qkv(ours: str, theirs: str, width: int, heads: int) -> list[Rule]:
  """GPT-2's c_attn, (D, 3D) with the queries, keys and values side by side."""
  head_dim = width // heads
  return [
      Rule(f"{ours}/kernel", (f"{theirs}.weight",), lambda t: t[0].reshape(width, 3, heads, head_dim),
           lambda a: [a.reshape(width, 3 * width)], ((width, 3 * width),)),
      Rule(f"{ours}/bias", (f"{theirs}.bias",), lambda t: t[0].reshape(3, heads, head_dim),
           lambda a: [a.reshape(3 * width)], ((3 * width,),)),
  ]


def attention_out(ours: str, theirs: str, width: int, heads: int, transposed: bool = True) -> list[Rule]:
  """The output projection as a (N, H, D) kernel: a Linear (transposed) or GPT-2's Conv1D."""
  head_dim = width // heads
  if transposed:
    load, save = (lambda t: t[0].T.reshape(heads, head_dim, width)), (lambda a: [a.reshape(width, width).T])
  else:
    load, save = (lambda t: t[0].reshape(heads, head_dim, width)), (lambda a: [a.reshape(width, width)])
  return [Rule(f"{ours}/kernel", (f"{theirs}.weight",), load, save, ((width, width),)),
          copy(f"{ours}/bias", f"{theirs}.bias", (width,))]


def vocab_rows(ours: str, theirs: str, real: int, padded: int, width: int | None = None) -> Rule:
  """An embedding table (real, D) or an output bias (real,) padded with zero rows to `padded`."""
  shape = (real,) if width is None else (real, width)

  def load(t):
    pad = [(0, padded - real)] + [(0, 0)] * (t[0].ndim - 1)
    return np.pad(t[0], pad)

  return Rule(ours, (theirs,), load, lambda a: [a[:real]], (shape,))


def get_path(tree: dict, path: str):
  for key in path.split("/"):
    tree = tree[key]
  return tree


def set_path(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for key in parents:
    tree = tree.setdefault(key, {})
  tree[leaf] = value


def load_params(rules: Sequence[Rule], tensors: Tensors, names: Callable[[str], str]) -> dict:
  """The params tree the rules make from the checkpoint; `names` maps a rule's tensor name to
  the checkpoint's (a prefix, an old LayerNorm name). Each tensor is read, converted and
  dropped in turn."""
  params: dict = {}
  for rule in rules:
    arrays = [tensors.take(names(name), shape) for name, shape in zip(rule.theirs, rule.shapes, strict=True)]
    # C-ordered float32, copied only where the rule's transpose left a view in another order.
    converted = np.require(rule.load(arrays), np.float32, "C")
    del arrays  # the rule's result may be a view of them: it keeps what it needs
    set_path(params, rule.ours, converted)
  return params


def save_tensors(rules: Sequence[Rule], params: dict, prefix: str = "") -> dict[str, np.ndarray]:
  """The checkpoint's tensors that the rules make from `params` (numpy arrays)."""
  tensors = {}
  for rule in rules:
    for name, array in zip(rule.theirs, rule.save(np.asarray(get_path(params, rule.ours), np.float32)), strict=True):
      tensors[prefix + name] = array
  return tensors


def check_shapes(params: dict, expected: dict) -> None:
  """Raises ConversionError unless `params` has exactly `expected`'s paths and shapes (the model
  that the converted config builds)."""
  import jax

  flat = lambda tree: {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(np.shape(v))  # noqa: E731
                       for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  have, want = flat(params), flat(expected)
  problems = [f"{k}: {have[k]} converted, {want[k]} expected" for k in sorted(have.keys() & want.keys())
              if have[k] != want[k]]
  problems += [f"{k} is missing" for k in sorted(want.keys() - have.keys())]
  problems += [f"{k} is not in the model" for k in sorted(have.keys() - want.keys())]
  if problems:
    raise ConversionError(f"the converted parameters do not fit the model: {'; '.join(problems[:4])}")
