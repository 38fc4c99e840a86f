"""filled_blanks: the first `num_samples` sentence pairs of the split as text with the model's
masked-token predictions filled in beside the true tokens, "[model's token|true token]", to
read what the masked-LM numbers (`masked_lm`) mean. The pairs and masks are the evaluation's
fixed ones (`sentence_pairs`); the samples come from the first batch of `eval.batch_size` pairs, so
`max_pairs` changes none of them: an entry with the same `max_pairs` as `masked_lm`'s reuses its
scoring of the split."""

from __future__ import annotations

from ssljax.evaluators import Evaluator, register, sentence_pairs


def _readable(tokenizer, token_id: int) -> str:
  """A token's text without surrounding space, or its piece name where that leaves nothing
  (a space, a newline, a special token)."""
  return tokenizer.decode([token_id]).strip() or tokenizer.id_to_piece(token_id)


def filled_blanks(tokenizer, out: dict, row: int) -> dict:
  """One pair as text, each predicted position shown as [model's token|true token]."""
  ids = tokenizer.special_roles(("pad", "sep", "cls"), "showing a sentence pair")
  masked, positions = out["masked"][row], out["positions"][row]
  used = out["weights"][row] > 0
  blanks = {int(p): (int(g), int(t)) for p, g, t in zip(positions[used], out["predicted"][row][used],
                                                      out["targets"][row][used])}
  parts, run = [], []
  for position, token in enumerate(masked.tolist()):
    if token == ids["pad"]:
      break
    if position in blanks or token == ids["sep"]:
      parts.append(tokenizer.decode(run))
      run = []
      if token == ids["sep"] and position not in blanks:
        parts.append(" [SEP] ")
      else:
        guess, truth = (_readable(tokenizer, i) for i in blanks[position])
        space = " " if tokenizer.decode([blanks[position][1]])[:1].isspace() else ""
        parts.append(f"{space}[{guess}|{truth}]")
    elif token != ids["cls"]:
      run.append(token)
  parts.append(tokenizer.decode(run))
  correct = sum(g == t for g, t in blanks.values())
  return {"text": "".join(parts).strip(), "blanks": len(blanks), "correct": int(correct)}


@register("filled_blanks", num_samples=3, max_pairs=0)
def make(context, options) -> Evaluator:
  sentence_pairs.check_max_pairs(options, "filled_blanks")
  batch_size = context.config.eval.batch_size
  if not 0 <= options.num_samples <= batch_size:
    raise ValueError(f"config.evals: num_samples of a 'filled_blanks' entry must be between 0 and "
                     f"config.eval.batch_size ({batch_size}), got {options.num_samples}")

  def run(params, model_state, split):
    del model_state
    first_batch = sentence_pairs.scored_pairs(context, params, split, options.max_pairs).first_batch
    rows = min(options.num_samples, int(first_batch["real"].sum()))
    return {"samples": [filled_blanks(context.tokenizer(), first_batch, row) for row in range(rows)]}

  return Evaluator(name="filled_blanks", run=run, format=format_report, scalars=lambda report: {})


def format_report(report: dict) -> str:
  lines = ["Filled-in blanks, [model's token|true token]:"]
  lines += [f"  {s['correct']}/{s['blanks']} right: " + s["text"].replace("\n", "\\n") for s in report["samples"]]
  return "\n".join(lines)
