"""What a user does with a finished run: evaluate it (`ssljax eval`; the trainer's own
`train.evaluation`, handed on here), continue a prompt with it (`ssljax generate`), classify
images zero-shot with it (`ssljax zero-shot`).

Each restores the run through `ssljax.workdir`, so these sit above the objectives and the trainer:

  from ssljax.commands import evaluate_workdir, generate, zero_shot
  evaluate_workdir("runs/simclr")
  generate("runs/gpt", ["Shares in the bank"], num_samples=2)
  zero_shot.classify("runs/clip", ["cat.png"], ["red circle", "blue square"])
"""

from ssljax.commands import zero_shot
from ssljax.train.evaluation import evaluate_workdir
from ssljax.commands.generate_text import generate

__all__ = ["evaluate_workdir", "generate", "zero_shot"]
