"""language_model: how well the model predicts a split's text, beside n-gram models that know
only token statistics.

The split's documents, each followed by [EOS], are one stream cut into windows of the training
context that overlap by one token (`ssljax.evaluate.language_model`), so every token after the
leading [EOS] is scored once: loss per token (nats), perplexity and bits per byte (the NLL over
ln 2 and the UTF-8 bytes of the text). The baselines are add-k unigram and bigram models fit on
the training split (at most `text.max_training_texts` documents, drawn by `seed`), k chosen on
the validation split, scored on exactly the same tokens; they are fit once per run.

Options: `max_windows` scores the split's first windows only (0: all of them; bits per byte
then has no byte count and is left out), `baselines=False` leaves the n-gram models out (the
cheap entry that runs during training), `batch_size` windows go through the model per call (a
fixed shape: one compilation).
"""

from __future__ import annotations

import functools

from ssljax.evaluate import language_model
from ssljax.evaluators import Evaluator, causal_lm, register
from ssljax.families import text

BASELINES = ("bigram", "unigram")


@register("language_model", max_windows=0, baselines=True, batch_size=32)
def make(context, options) -> Evaluator:
  causal_lm.check_positive("language_model", batch_size=options.batch_size)
  if options.max_windows < 0:
    raise ValueError(f"the language_model evaluator's option max_windows must be >= 0 (0: all), "
                     f"got {options.max_windows}")
  config = context.config

  def stream_ids():
    """The tokenizer's [EOS] (between documents) and [PAD] (after the last)."""
    return context.tokenizer().special_roles(("eos", "pad"), "scoring a language model's windows")

  def split_windows(split):
    """(windows, mask, UTF-8 bytes of the text) of every window of the split, once per run."""
    def tokenise():
      texts = text.split_texts(config, split)
      windows, mask = language_model.text_windows(context.tokenizer(), texts, seq_len=config.text.seq_len,
                                                  eos_id=stream_ids()["eos"], pad_id=stream_ids()["pad"])
      return windows, mask, sum(len(t.encode("utf-8")) for t in texts)

    return context.lasting(("language_model windows", split), tokenise)

  def scored_windows(split):
    """The windows the options score, their mask, and their bytes (None when some are left out)."""
    windows, mask, num_bytes = split_windows(split)
    if options.max_windows and options.max_windows < len(windows):
      return windows[:options.max_windows], mask[:options.max_windows], None
    return windows, mask, num_bytes

  def fit_baselines():
    d = config.data
    train_texts = text.split_texts(config, d.train_split, max_texts=config.text.get("max_training_texts"))
    return language_model.fit_baselines(context.tokenizer(), train_texts, text.split_texts(config, d.eval_split),
                                        seq_len=config.text.seq_len, eos_id=stream_ids()["eos"],
                                        pad_id=stream_ids()["pad"])

  def baseline_rows(split):
    windows, mask, num_bytes = scored_windows(split)
    num_tokens = int(mask.sum())
    models = context.lasting(("language_model baselines",), fit_baselines)
    return {name: {**language_model.summary(language_model.baseline_nll(models[name], windows, mask), num_tokens,
                                            num_bytes),
                   "add_k": models[name].k} for name in BASELINES}

  def run(params, model_state, split):
    windows, mask, num_bytes = scored_windows(split)
    num_tokens = int(mask.sum())
    nll = language_model.model_nll(causal_lm.log_probs_fn(context, params, model_state), windows, mask,
                                   options.batch_size)
    tokenizer = context.tokenizer()
    report = {"tokenizer": tokenizer.settings() | {"vocab_size": tokenizer.vocab_size},
              "model": language_model.summary(nll, num_tokens, num_bytes)}
    if options.baselines:
      report |= context.lasting(("language_model baseline rows", split, options.max_windows),
                                functools.partial(baseline_rows, split))
    report["scored"] = {"tokens": num_tokens, "bytes": num_bytes, "windows": len(windows)}
    return report

  return Evaluator(name="language_model", run=run, format=format_report,
                   scalars=lambda report: {"loss_per_token": report["model"]["loss_per_token"]})


def format_report(report: dict) -> str:
  """A title with what was scored, then a row per model: loss per token, perplexity, bits per byte."""
  scored = report["scored"]
  if scored["bytes"] is None:
    title = f"Language model (the first {scored['windows']:,} windows: {scored['tokens']:,} tokens)"
  else:
    title = f"Language model ({scored['tokens']:,} tokens, {scored['bytes']:,} bytes)"
  lines = [title, f"{'model':<10}{'loss/token':>12}{'perplexity':>12}{'bits/byte':>12}"]
  for name in ("model", *BASELINES):
    if name in report:
      row = report[name]
      bits = "-" if row["bits_per_byte"] is None else f"{row['bits_per_byte']:.4f}"
      lines.append(f"{name:<10}{row['loss_per_token']:>12.4f}{row['perplexity']:>12.2f}{bits:>12}")
  return "\n".join(lines)
