"""samples: what the model writes after a headline, to read beside the scores.

`num_samples` headlines of the split (a random choice fixed by `eval.seed`; the first line of
documents where the corpus has no titles), each followed by a blank line as in an article, are
continued by `max_new_tokens` tokens sampled (`objective.extras["generate"]`) at `temperature`
from the `top_k` most likely tokens, from a key fixed by `eval.seed`."""

from __future__ import annotations

import jax
import numpy as np

from ssljax import data
from ssljax.evaluators import Evaluator, causal_lm, register
from ssljax.families import text


def headline_prompts(config, split: str, count: int) -> list[str]:
  """`count` headlines of the split chosen by `eval.seed` (first lines where the corpus has no
  titles), each followed by a blank line."""
  if "title" in data.dataset_info(config.data).features:
    titles = text.split_texts(config, split, key="title")
  else:  # a corpus without headlines: the first line of each document
    titles = [document.split("\n", 1)[0][:200] for document in text.split_texts(config, split)]
  picked = np.random.default_rng(config.eval.seed).choice(len(titles), min(count, len(titles)), replace=False)
  return [titles[i] + "\n\n" for i in picked]


@register("samples", num_samples=3, max_new_tokens=60, temperature=0.8, top_k=40)
def make(context, options) -> Evaluator:
  causal_lm.check_positive("samples", num_samples=options.num_samples, max_new_tokens=options.max_new_tokens)
  config = context.config

  def run(params, model_state, split):
    tokenizer = context.tokenizer()
    prompts = context.lasting(("headline prompts", split, options.num_samples),
                              lambda: headline_prompts(config, split, options.num_samples))
    outputs = context.objective.extras["generate"](
        params, model_state, [text.prompt_ids(tokenizer, p, config.text.seq_len) for p in prompts],
        max_new_tokens=options.max_new_tokens, key=jax.random.key(config.eval.seed),
        temperature=options.temperature, top_k=options.top_k)
    return {"temperature": options.temperature, "top_k": options.top_k,
            "continuations": [{"prompt": p, "continuation": tokenizer.decode(o)} for p, o in zip(prompts, outputs)]}

  def format(report):
    lines = [f"Samples (headline, then the model's continuation; temperature {report['temperature']}, "
             f"top-k {report['top_k']}):"]
    for sample in report["continuations"]:
      lines.append(f"  {sample['prompt'].strip()!r}\n    -> {sample['continuation']!r}")
    return "\n".join(lines)

  return Evaluator(name="samples", run=run, format=format, scalars=lambda report: {})
