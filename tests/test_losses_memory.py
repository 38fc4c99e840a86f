"""The memory benchmark of ssljax.bench.loss_memory, at sizes that compile in seconds.

The full claim (65,536 embeddings: blockwise under 1 GiB, dense over 16 GiB) is the benchmark's
default table; here the same code checks the shape of the curves: dense temporary memory grows
with the square of the batch, blockwise only linearly, and blockwise is the smaller.
"""

import numpy as np
import pytest

from ssljax.bench import loss_memory


def test_blockwise_memory_grows_linearly_and_dense_quadratically():
  rows = loss_memory.loss_memory_table(batch_sizes=(256, 1024), dim=16, block_size=64)
  assert [row["batch_size"] for row in rows] == [256, 1024]
  small, large = rows
  for row in rows:
    assert 0 < row["blockwise_bytes"] < row["dense_bytes"], row
    np.testing.assert_allclose(row["dense_mib"], row["dense_bytes"] / 2**20)
  # 4x the batch: a quadratic curve grows ~16x, a linear one ~4x.
  dense_growth = large["dense_bytes"] / small["dense_bytes"]
  blockwise_growth = large["blockwise_bytes"] / small["blockwise_bytes"]
  assert dense_growth > 10, dense_growth
  assert blockwise_growth < 6, blockwise_growth
  # The dense loss holds at least one (batch x batch) float32 matrix.
  assert large["dense_bytes"] >= 1024 * 1024 * 4


def test_main_prints_the_table(capsys):
  # The sizes of the test above: the compiled analyses are cached, so this costs no compile.
  rows = loss_memory.main(["--batch_sizes", "256,1024", "--dim", "16", "--block_size", "64"])
  out = capsys.readouterr().out
  assert "batch = 2N embeddings" in out and "dense MiB" in out and "blockwise MiB" in out
  lines = out.strip().splitlines()
  assert [line.split()[0] for line in lines[-2:]] == ["256", "1024"]
  assert float(lines[-1].split()[1]) == round(rows[1]["dense_mib"], 1)


def test_65536_embeddings_blockwise_under_1_gib_dense_over_16_gib():
  """The benchmark's headline, on one device: z1, z2 each (32768, 128), block 1024."""
  row, = loss_memory.loss_memory_table(batch_sizes=(65536,), dim=128, block_size=1024)
  assert row["blockwise_bytes"] < 2**30, row
  assert row["dense_bytes"] > 16 * 2**30, row
