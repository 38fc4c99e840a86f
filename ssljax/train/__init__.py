"""The generic trainer: mesh, sharded step, loop, checkpoints, metrics."""
