"""retrieval: image-to-text and text-to-image recall@1 and @5 among a split's first `examples`
image-caption pairs (`ssljax.evaluate.retrieval`), on the held-out split too beside the test
split (`image_text_embeddings.evaluation_splits`).

Recall is strict (the query's own caption or image) and by scene (any caption or image of the
same scene: a record's "scene" field where the dataset has one, as shapes' captions repeat
scenes through several templates; else its caption), each beside the recall of a random ranking.
"""

from __future__ import annotations

from ssljax.evaluate import retrieval
from ssljax.evaluators import Evaluator, image_text_embeddings, register
from ssljax.families import image_text
from ssljax.text.records import as_str

KS = (1, 5)


@register("retrieval", examples=1000)
def make(context, options) -> Evaluator:
  if options.examples < 1:
    raise ValueError(f"config.evals.retrieval.examples must be >= 1, got {options.examples}")
  config = context.config

  def scene(record: dict) -> str:
    return as_str(record["scene"]) if "scene" in record else image_text.caption_of(record, config.data.caption_key)

  def run(params, model_state, split):
    splits = {}
    for s in image_text_embeddings.evaluation_splits(config, split):
      image_emb, text_emb, records = image_text_embeddings.embeddings(context, params, model_state, s,
                                                                      options.examples)
      splits[s] = retrieval.retrieval(image_emb, text_emb, [scene(r) for r in records], KS)
    return {"splits": splits}

  def format(report):
    blocks = []
    for split, result in report["splits"].items():
      lines = [f"Retrieval among {result['pairs']} pairs, {split} (recall@1 / recall@5):",
               f"{'match':<8}{'image->text':>18}{'text->image':>18}{'chance':>18}"]
      for match in ("strict", "scene"):
        row = result[match]
        cells = [f"{row[d]['R@1']:.3f} / {row[d]['R@5']:.3f}" for d in ("image_to_text", "text_to_image", "chance")]
        lines.append(f"{match:<8}" + "".join(c.rjust(18) for c in cells))
      blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

  def scalars(report):
    """Strict recall of each direction on the split evaluated ("image_to_text_recall_at_1")."""
    strict = next(iter(report["splits"].values()))["strict"]
    return {f"{direction}_recall_at_{k}": strict[direction][f"R@{k}"]
            for direction in ("image_to_text", "text_to_image") for k in KS}

  return Evaluator(name="retrieval", run=run, format=format, scalars=scalars)
