"""next_sentence: next-sentence accuracy of the model on a split's sentence pairs, read on the
masked input as in pretraining (`sentence_pairs`), beside chance (0.5), always predicting the
split's majority label, and word overlap (`evaluate.word_overlap`: IsNext when the TF-IDF cosine
of A and B, on the same masked input, reaches a threshold, the best one on the first `max_pairs`
pairs of `data.eval_split`).

Options: `max_pairs` scores the split's first pairs only (0: all of them); `baselines=False`
leaves word overlap out, and with it the count of the training split and the threshold's choice
(the cheap entry that runs during training).
"""

from __future__ import annotations

from ssljax.evaluate import word_overlap
from ssljax.evaluators import Evaluator, register, sentence_pairs

CHANCE = 0.5


@register("next_sentence", max_pairs=0, baselines=True)
def make(context, options) -> Evaluator:
  sentence_pairs.check_max_pairs(options, "next_sentence")

  def word_overlap_row(split):
    fixed = sentence_pairs.fixed_pairs(context, split, options.max_pairs)
    chosen_on = context.config.data.eval_split
    choosing = fixed if chosen_on == split else sentence_pairs.fixed_pairs(context, chosen_on, options.max_pairs)
    threshold = word_overlap.best_threshold(choosing.cosines, choosing.labels)
    return {"accuracy": word_overlap.accuracy(fixed.cosines, fixed.labels, threshold), "threshold": threshold,
            "chosen_on": chosen_on}

  def run(params, model_state, split):
    del model_state
    model = sentence_pairs.scored_pairs(context, params, split, options.max_pairs).totals
    is_next = model["is_next"] / model["pairs"]
    report = {
        "pairs": int(model["pairs"]), "is_next_fraction": float(is_next),
        "model": {"accuracy": float(model["nsp_correct"] / model["pairs"])},
        "chance": CHANCE, "majority": float(max(is_next, 1 - is_next)),
    }
    if options.baselines:
      report["word_overlap"] = word_overlap_row(split)
    return report

  return Evaluator(name="next_sentence", run=run, format=format_report,
                   scalars=lambda report: {"accuracy": report["model"]["accuracy"]})


def format_report(report: dict) -> str:
  lines = [f"Next-sentence prediction on {report['pairs']:,} sentence pairs ({report['is_next_fraction']:.1%} IsNext):",
           f"{'':<32}{'next-sent. acc':>16}",
           f"{'model':<32}{report['model']['accuracy']:>16.4f}",
           f"{'chance (majority label)':<32}{report['chance']:>9.4f} ({report['majority']:.3f})"]
  if "word_overlap" in report:
    lines.append(f"{'word overlap (TF-IDF cosine)':<32}{report['word_overlap']['accuracy']:>16.4f}")
  return "\n".join(lines)
