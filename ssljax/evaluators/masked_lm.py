"""masked_lm: masked-LM accuracy and loss (nats per predicted token) of the model on a split's
sentence pairs with fixed masks (`sentence_pairs`), at the masked positions, beside two models
that know no context: always predicting the training split's most frequent ordinary token, and
a unigram model of the training split (add-one smoothed).

Options: `max_pairs` scores the split's first pairs only (0: all of them); `baselines=False`
leaves the two baselines out, and with them the count of the training split (the cheap entry
that runs during training).
"""

from __future__ import annotations

from ssljax.evaluators import Evaluator, register, sentence_pairs


@register("masked_lm", max_pairs=0, baselines=True)
def make(context, options) -> Evaluator:
  sentence_pairs.check_max_pairs(options, "masked_lm")

  def run(params, model_state, split):
    del model_state
    tokenizer = context.tokenizer()
    model = sentence_pairs.scored_pairs(context, params, split, options.max_pairs).totals
    report = {
        "pairs": int(model["pairs"]), "predictions": int(model["predictions"]),
        "tokenizer": tokenizer.settings() | {"vocab_size": tokenizer.vocab_size},
        "model": {"accuracy": float(model["mlm_correct"] / model["predictions"]),
                  "loss": float(model["mlm_nll"] / model["predictions"])},
    }
    if options.baselines:
      fixed = sentence_pairs.fixed_pairs(context, split, options.max_pairs).totals
      most_frequent = sentence_pairs.training_counts(context).most_frequent
      report["most_frequent_token"] = {"accuracy": float(fixed["frequent_correct"] / fixed["predictions"]),
                                       "token": tokenizer.id_to_piece(most_frequent)}
      report["unigram"] = {"loss": float(fixed["unigram_nll"] / fixed["predictions"])}
    return report

  return Evaluator(name="masked_lm", run=run, format=format_report,
                   scalars=lambda report: {"accuracy": report["model"]["accuracy"], "loss": report["model"]["loss"]})


def format_report(report: dict) -> str:
  lines = [f"Masked-LM on {report['pairs']:,} sentence pairs ({report['predictions']:,} masked-token predictions):",
           f"{'':<32}{'masked-LM acc':>14}{'masked-LM loss':>16}",
           f"{'model':<32}{report['model']['accuracy']:>14.4f}{report['model']['loss']:>16.4f}"]
  if "most_frequent_token" in report:
    frequent = report["most_frequent_token"]
    lines += [f"{'most frequent token ' + repr(frequent['token']):<32}{frequent['accuracy']:>14.4f}{'-':>16}",
              f"{'unigram (training split)':<32}{'-':>14}{report['unigram']['loss']:>16.4f}"]
  return "\n".join(lines)
