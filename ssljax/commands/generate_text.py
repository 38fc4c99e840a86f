"""Text from a trained language model: `ssljax generate` and its Python form.

  from ssljax.commands import generate
  generate("runs/gpt", ["Shares in the bank"], num_samples=2, seed=0)

The run's config, tokenizer and latest checkpoint are all it needs. Prompts are tokenised with
the run's tokenizer after an [EOS] (what precedes a document in training), continued with a KV
cache by one compiled prefill and one compiled decode step, and decoded.
"""

from __future__ import annotations

from typing import Sequence

import jax

from ssljax import objectives
from ssljax import workdir as workdir_lib
from ssljax.errors import UserError
from ssljax.families import text
from ssljax.text import tokenizer as tokenizer_lib


def generate(workdir: str, prompts: Sequence[str], *, num_samples: int = 1, max_new_tokens: int = 80,
             temperature: float = 0.8, top_k: int | None = 40, top_p: float | None = None,
             greedy: bool = False, seed: int = 0) -> list[list[str]]:
  """`num_samples` continuations of every prompt (a list per prompt); the same seed gives the
  same text."""
  config = workdir_lib.load_config(workdir)
  objective, params, model_state = objectives.restore_model(workdir, config)
  if "generate" not in objective.extras:
    raise UserError(f"the run in {workdir} is a {objective.name} run, which does not generate text")
  tokenizer = tokenizer_lib.load(workdir)
  encoded = [text.prompt_ids(tokenizer, p, config.text.seq_len) for p in prompts]
  rows = [ids for ids in encoded for _ in range(num_samples)]
  new = objective.extras["generate"](params, model_state, rows, max_new_tokens=max_new_tokens,
                                     key=jax.random.key(seed), temperature=temperature, top_k=top_k,
                                     top_p=top_p, greedy=greedy)
  texts = [tokenizer.decode(ids) for ids in new]
  return [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
