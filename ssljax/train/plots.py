"""`ssljax plot`: PNG curves of the logged metrics (loss, learning rate, and what the
evaluators of config.evals logged on the validation split during training)."""

from __future__ import annotations

import os

from ssljax.train.metrics import read_metrics
from ssljax.workdir import NotARunError

CURVES = {
    "loss.png": ("loss", "pretraining loss"),
    "learning_rate.png": ("learning_rate", "learning rate"),
}
VALIDATION_PREFIX = "val_"  # the evaluators' scalars (`evaluators.Evaluation.scalars`)


def curves(records: list[dict]) -> dict[str, tuple[str, str]]:
  """CURVES, and one curve per validation scalar the run logged ("val_knn_accuracy.png")."""
  logged = sorted({k for r in records for k in r if k.startswith(VALIDATION_PREFIX)})
  return {**CURVES, **{f"{k}.png": (k, f"{k[len(VALIDATION_PREFIX):]} (validation split)") for k in logged}}


def plot_workdir(workdir: str) -> list[str]:
  """Writes one PNG per logged metric of `curves` into `workdir`/plots; returns their paths."""
  import matplotlib

  matplotlib.use("Agg")  # files only; no display needed
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  if not records:
    raise NotARunError(f"no metrics in {workdir}: run `ssljax train --workdir {workdir}` first")
  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for filename, (key, title) in curves(records).items():
    points = [(r["step"], r[key]) for r in records if key in r]
    if not points:
      continue
    steps, values = zip(*points)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, values, marker="." if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out_dir, filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written
