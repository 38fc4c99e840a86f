"""Temporary memory of NT-Xent's value and gradient, dense against blockwise.

XLA's compiled memory analysis answers "how much scratch memory would this need" without
running anything, so a batch of 65,536 embeddings costs a compile, not 16 GiB:

    python -m ssljax.bench.loss_memory                 # the default table
    python -m ssljax.bench.loss_memory --batch_sizes 1024,4096 --block_size 512

"Batch size" is the global number of embeddings, 2N views: z1 and z2 are each (batch / 2, dim),
so the dense loss builds a (batch x batch) similarity matrix.
"""

from __future__ import annotations

import argparse
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from ssljax.losses import nt_xent

_MIB = 2**20
_TEMPERATURE = 0.1


def compiled_temp_bytes(batch_size: int, dim: int, block_size: int | None) -> int:
  """Temporary bytes XLA allocates for jit(value_and_grad(nt_xent)) on the default device.

  Only lowered and compiled from shapes (`jax.ShapeDtypeStruct`); nothing is executed.
  """
  return _compiled_temp_bytes(jax.default_backend(), batch_size, dim, block_size)


@functools.lru_cache(maxsize=None)
def _compiled_temp_bytes(backend: str, batch_size: int, dim: int, block_size: int | None) -> int:
  del backend  # part of the cache key only: the answer depends on the compiler
  if batch_size % 2:
    raise ValueError(f"batch_size counts both views and must be even, got {batch_size}")
  views = jax.ShapeDtypeStruct((batch_size // 2, dim), jnp.float32)

  def loss(z1, z2):
    return nt_xent(z1, z2, temperature=_TEMPERATURE, block_size=block_size)

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  analysis = step.lower(views, views).compile().memory_analysis()
  if analysis is None:
    raise RuntimeError(f"backend {jax.default_backend()!r} gives no compiled memory analysis")
  return int(analysis.temp_size_in_bytes)


def loss_memory_table(batch_sizes: Sequence[int] = (1024, 4096, 16384, 65536), dim: int = 128,
                      block_size: int = 1024) -> list[dict]:
  """One row per global batch size (2N embeddings: z1, z2 each (batch/2, dim)).

  Returns:
    [{"batch_size", "dim", "block_size", "dense_bytes", "blockwise_bytes", "dense_mib",
      "blockwise_mib"}, ...], temporary memory of the loss and its gradient.
  """
  rows = []
  for batch_size in batch_sizes:
    dense = compiled_temp_bytes(batch_size, dim, None)
    blockwise = compiled_temp_bytes(batch_size, dim, block_size)
    rows.append({
        "batch_size": batch_size, "dim": dim, "block_size": block_size,
        "dense_bytes": dense, "blockwise_bytes": blockwise,
        "dense_mib": dense / _MIB, "blockwise_mib": blockwise / _MIB,
    })
  return rows


def format_table(rows: list[dict]) -> str:
  if not rows:
    return ""
  header = (f"NT-Xent value+grad temporary memory on {jax.devices()[0].platform}, "
            f"float32, dim {rows[0]['dim']}, block {rows[0]['block_size']}\n"
            f"batch = 2N embeddings (z1 and z2 each batch/2 x dim)\n"
            f"{'batch':>8} {'dense MiB':>12} {'blockwise MiB':>14} {'ratio':>8}")
  lines = [header]
  for row in rows:
    ratio = row["dense_bytes"] / max(row["blockwise_bytes"], 1)
    lines.append(f"{row['batch_size']:>8} {row['dense_mib']:>12.1f} "
                 f"{row['blockwise_mib']:>14.1f} {ratio:>8.1f}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="1024,4096,16384,65536",
                      help="comma-separated global numbers of embeddings (2N)")
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--block_size", type=int, default=1024)
  args = parser.parse_args(argv)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
  rows = loss_memory_table(batch_sizes, dim=args.dim, block_size=args.block_size)
  print(format_table(rows))
  return rows


if __name__ == "__main__":
  main()
