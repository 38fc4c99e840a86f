"""Where training metrics go: JSON lines, TensorBoard event files and a progress bar."""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import numpy as np
import tqdm

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        raise
      # A run killed while appending leaves a torn last line; its step is re-run on resume.
  return records


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard.

  On resume from step s, lines logged after s by the interrupted run are dropped first, so
  the file reads as if the run had never stopped.
  """

  def __init__(self, workdir: str, resume_step: int, tensorboard: bool = True, enabled: bool = True):
    # With several processes one writes (all hold the same metrics); `enabled=False` touches
    # no file.
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not enabled:
      return
    kept = [m for m in read_metrics(workdir) if m["step"] <= resume_step]
    with open(self.path + ".tmp", "w") as f:  # renamed into place: a kill here loses nothing
      f.writelines(json.dumps(m) + "\n" for m in kept)
    os.replace(self.path + ".tmp", self.path)
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: it is slow to import

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(np.asarray(v)) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in record.items():
        if name != "step":
          self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A tqdm bar showing loss, steps/s and throughput (images/s, tokens/s, ...), measured
  between log points."""

  def __init__(self, total: int, initial: int, units_per_step: int, unit: str = "images",
               enabled: bool = True):
    self.bar = tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
    self.units_per_step, self.unit = units_per_step, unit
    self._last_time = time.perf_counter()
    self._last_step = initial

  def update(self, step: int, metrics: Mapping[str, float]) -> dict:
    """Advances the bar to `step`; returns the throughput figures measured since last call."""
    now = time.perf_counter()
    steps = step - self._last_step
    rate = steps / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    per_sec = f"{self.unit}_per_sec"
    speed = {"steps_per_sec": rate, per_sec: rate * self.units_per_step}
    shown = {k: f"{float(v):.4g}" for k, v in metrics.items()
             if k == "loss" or k.startswith("val_")}
    shown.update({"steps/s": f"{rate:.2f}", f"{self.unit}/s": f"{speed[per_sec]:.0f}"})
    self.bar.set_postfix(shown, refresh=False)
    self.bar.update(steps)
    return speed

  def close(self) -> None:
    self.bar.close()
