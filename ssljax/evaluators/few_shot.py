"""few_shot: in-context learning, the model's accuracy with k solved examples in the prompt
(`ssljax.evaluate.few_shot`: every candidate answer scored by the sum of its tokens'
log-probabilities, as in GPT-3), for each k of `ks`, mean and std over `draws` draws of the
examples (seeded by `eval.seed`), `queries` queries a draw.

The tasks: the synthetic ones of `ssljax.text.icl_tasks`, whose mapping is drawn afresh for every
prompt so that only reading the prompt answers them (their prompts do not depend on the split),
and, where the corpus has topics (`data.label_key`), topic classification by prompting:
examples from the training split, queries from the split evaluated. Each k's row holds chance
and the accuracy of always answering the most frequent answer beside the model's."""

from __future__ import annotations

import ml_collections

from ssljax import data
from ssljax.evaluate import few_shot as few_shot_lib
from ssljax.evaluators import Evaluator, causal_lm, register
from ssljax.text import icl_tasks
from ssljax.text.records import as_str


def tasks(config: ml_collections.ConfigDict, split: str) -> dict:
  """{name: task}: the synthetic in-context tasks, and "topic" (examples from the training
  split, queries from `split`) where the corpus has topics (a `text_files` corpus has none)."""
  d = config.data
  names = data.dataset_info(d).label_names

  def pairs(s):
    source = data.open_split(d, s)
    return [(as_str(r["title"]), names[int(r[d.label_key])]) for r in source.__getitems__(range(len(source)))]

  found = {task.name: task for task in icl_tasks.TASKS}
  if d.get("label_key") and names is not None:
    found["topic"] = few_shot_lib.TopicTask(train=pairs(d.train_split), queries=pairs(split), topics=tuple(names))
  return found


@register("few_shot", ks=(0, 1, 2, 4, 8), draws=5, queries=100, batch_size=32)
def make(context, options) -> Evaluator:
  causal_lm.check_positive("few_shot", draws=options.draws, queries=options.queries, batch_size=options.batch_size)
  if not options.ks or min(options.ks) < 0:
    raise ValueError(f"the few_shot evaluator's option ks must be examples per prompt (>= 0), got {options.ks}")
  config = context.config

  def run(params, model_state, split):
    score = causal_lm.log_probs_fn(context, params, model_state)
    tokenizer = context.tokenizer()
    # A prompt starts after [EOS], as a document does in the packed training stream.
    ids = tokenizer.special_roles(("eos", "pad"), "few-shot prompts")
    report = {}
    for name, task in context.lasting(("few_shot tasks", split), lambda: tasks(config, split)).items():
      result = few_shot_lib.evaluate(score, tokenizer, task, ks=tuple(options.ks), num_queries=options.queries,
                                     draws=options.draws, seed=config.eval.seed, batch_size=options.batch_size,
                                     context_len=config.text.seq_len, start_id=ids["eos"], pad_id=ids["pad"])
      report[name] = {str(k): row for k, row in result.items()}
    return report

  def format(report):
    return "\n\n".join(few_shot_lib.format_table({int(k): row for k, row in result.items()},
                                                 title=f"In-context few-shot accuracy, {name}")
                       for name, result in report.items())

  def scalars(report):
    return {f"{name}_k{k}": row["mean"] for name, result in report.items() for k, row in result.items()}

  return Evaluator(name="few_shot", run=run, format=format, scalars=scalars)
