"""The image-text family: CLIP and SigLIP on captioned images (Radford et al. 2021, arXiv 2103.00020).

- Tokenizer: a SentencePiece model trained on the training split's captions when a run starts
  (or bytes, or a user's `.model` file), saved in the workdir and reloaded from there, exactly
  as the text family does (`families.text.run_tokenizer`).
- Input: records become {"image": uint8 (H, W, C), "tokens": int32 (T,)} on the host (plus
  "label", one attribute of the image, for the trainer's online probe where the dataset has
  one): the caption's ids, cut to T - 1, then [EOS], then [PAD]s. The text tower reads its
  feature at the [EOS]. Augmentation happens on the device, inside the step.
- Monitor: zero-shot accuracy on the validation split every `train.eval_every` steps.
- Evaluation (`ssljax eval`, and the end of `ssljax train`) on the test split, and on the
  held-out split when the config names one:
  * zero-shot classification (the paper's Section 3.1) of each attribute the dataset labels
    (shape, colour) and of the shape-colour combination, from prompts, with one template and
    with a prompt ensemble (Section 3.1.4: a class's classifier weight is the normalised mean of
    its prompts' normalised text embeddings), beside chance;
  * image-to-text and text-to-image retrieval, recall@1 and @5 among `eval.retrieval_examples`
    pairs: strict (the pair's own caption or image) and by scene (any caption or image of the
    same scene, since templates repeat scenes), beside chance;
  * a linear probe with `eval.labels_per_class` labels per class on the image tower's
    features, for the trained tower and a random-init one (BatchNorm calibrated), mean and std
    over `eval.label_draws` draws.

Objectives of this family supply `extras["embed_image"]`, `extras["embed_text"]` and
`extras["logit_scale"]`.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from ssljax import data
from ssljax.data import shapes
from ssljax.evaluate import features as features_lib
from ssljax.evaluate import linear_probe
from ssljax.families import image, text
from ssljax.interface import Family, Monitor, TrainInput
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.text.records import as_str

# The SentencePiece model is trained on at most this many captions.
TOKENIZER_CAPTIONS = 200_000

# Prompt ensembles for the `shapes` attributes, written like its captions. "{}" is the class
# name; the other fields are filled with every value of that attribute, so "a {size} {colour} {}
# {where}" is 2 x 5 x 5 = 50 prompts per shape.
ENSEMBLES = {
    "shape": ("a {size} {colour} {} {where}", "there is a {size} {colour} {} {where}"),
    "colour": ("a {size} {} {shape} {where}", "there is a {size} {} {shape} {where}"),
    "combination": ("a {size} {} {where}", "there is a {size} {} {where}"),
}


def caption_tokens(tokenizer: tokenizer_lib.Tokenizer, caption: str, seq_len: int) -> np.ndarray:
  """(seq_len,) int32: the caption's ids cut to seq_len - 1, [EOS], then [PAD]s."""
  ids = tokenizer.encode(caption)[:seq_len - 1] + [tokenizer_lib.EOS]
  tokens = np.full((seq_len,), tokenizer_lib.PAD, np.int32)
  tokens[:len(ids)] = ids
  return tokens


def tokenize(tokenizer: tokenizer_lib.Tokenizer, captions: Sequence[str], seq_len: int) -> np.ndarray:
  """(N, seq_len) int32 rows of `caption_tokens`."""
  return np.stack([caption_tokens(tokenizer, c, seq_len) for c in captions])


def caption_of(record: dict, key: str) -> str:
  """The record's caption: `key` may be a path ("captions/text") and a list gives its first
  caption (COCO-style datasets hold several per image)."""
  value = record
  for part in key.split("/"):
    value = value[part]
  if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, (bytes, str)):
    value = value[0]
  return as_str(value)


class CaptionedImage:
  """The family's record transform: record -> {"image", "tokens"[, "label"]} of numpy arrays.

  A class rather than a closure so that grain worker processes can receive it (the
  SentencePiece tokenizer pickles as its model bytes).
  """

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer, seq_len: int, caption_key: str,
               image_size: int | None = None, label_key: str | None = None):
    self.tokenizer, self.seq_len, self.caption_key = tokenizer, seq_len, caption_key
    self.image_size, self.label_key = image_size, label_key or None

  def __call__(self, record: dict) -> dict:
    example = {"image": data.prepare_image(record["image"], self.image_size),
               "tokens": caption_tokens(self.tokenizer, caption_of(record, self.caption_key), self.seq_len)}
    if self.label_key:
      example["label"] = np.asarray(record[self.label_key], np.int32)
    return example


def _source(config: ml_collections.ConfigDict, split: str):
  d = config.data
  return data.load(d.name, split, data_dir=d.data_dir)


def class_names(config: ml_collections.ConfigDict, feature: str) -> tuple[str, ...] | None:
  """The names of a ClassLabel feature of the dataset, or None if it has no such feature."""
  features = _source(config, config.data.train_split).dataset_info.features
  if feature not in features or not hasattr(features[feature], "names"):
    return None
  return tuple(features[feature].names)


def split_captions(config: ml_collections.ConfigDict, split: str, limit: int | None = None) -> list[str]:
  source = _source(config, split)
  count = len(source) if limit is None else min(limit, len(source))
  records = source.__getitems__(range(count))
  return [caption_of(r, config.data.caption_key) for r in records]


def run_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> tokenizer_lib.Tokenizer:
  """The run's tokenizer: saved in the workdir, else trained on the training captions and saved
  there (a saved one that the config contradicts is an error, as for the text family)."""
  saved = os.path.exists(os.path.join(workdir, tokenizer_lib.CONFIG_FILE))
  needs_texts = not saved and config.text.tokenizer == "sentencepiece" and not config.text.model_file
  captions = split_captions(config, config.data.train_split, TOKENIZER_CAPTIONS) if needs_texts else []
  return text.run_tokenizer(config, workdir, captions)


def record_fn(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer,
              with_label: bool = True) -> CaptionedImage:
  d = config.data
  return CaptionedImage(tokenizer, config.text.seq_len, d.caption_key, d.image_size,
                        d.get("label_key") if with_label else None)


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  tokenizer = run_tokenizer(config, workdir)
  source = data.in_memory(_source(config, config.data.train_split))
  return TrainInput(source=source, record_fn=record_fn(config, tokenizer), unit="pairs")


# --- zero-shot classification ------------------------------------------------------------------


def ensemble_classifier(text_embeddings: np.ndarray) -> np.ndarray:
  """CLIP's prompt ensemble (Section 3.1.4): (K classes, M prompts, E) normalised prompt
  embeddings -> (K, E), each class's mean embedding, normalised again."""
  mean = np.mean(np.asarray(text_embeddings, np.float64), axis=1)  # (K, M, E) -> (K, E)
  return (mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def expand_templates(templates: Sequence[str], vocabularies: dict[str, Sequence[str]]) -> list[str]:
  """Every filling of each template's named fields ({size}, {colour}, ...) with every value of
  that field's vocabulary; "{}" (the class name) stays. ("a {size} {}", sizes small and large)
  -> ["a small {}", "a large {}"]."""
  out = []
  for template in templates:
    fields = [f for f in vocabularies if "{" + f + "}" in template]
    for values in itertools.product(*(vocabularies[f] for f in fields)):
      out.append(template.replace("{}", "{{}}").format(**dict(zip(fields, values))))
  return out


def class_text_embeddings(embed_text: Callable[[np.ndarray], np.ndarray], tokenizer, names: Sequence[str],
                          templates: Sequence[str], seq_len: int) -> np.ndarray:
  """(K, M, E) normalised embeddings of every class name in every template."""
  prompts = [t.format(name) for name in names for t in templates]
  embeddings = np.asarray(embed_text(tokenize(tokenizer, prompts, seq_len)))  # (K * M, E)
  return embeddings.reshape(len(names), len(templates), -1)


def zero_shot_predictions(image_embeddings: np.ndarray, classifier: np.ndarray) -> np.ndarray:
  """(N, E) normalised images, (K, E) class weights -> (N,) the class of highest cosine."""
  return np.argmax(image_embeddings @ classifier.T, axis=1)  # (N, E) . (E, K) -> (N, K)


def zero_shot_accuracies(image_embeddings: np.ndarray, labels: np.ndarray, embed_text, tokenizer,
                         names: Sequence[str], single: str, ensemble: Sequence[str],
                         seq_len: int) -> dict[str, float]:
  """Accuracy with one template, with the prompt ensemble, and with the ensemble's nearest
  prompt (each class scored by its best-matching prompt instead of their mean: what the mean
  loses when the embedding is not additive in the attributes), and chance (1 / K)."""
  single_weights = class_text_embeddings(embed_text, tokenizer, names, [single], seq_len)[:, 0]
  per_prompt = class_text_embeddings(embed_text, tokenizer, names, ensemble, seq_len)  # (K, M, E)
  nearest = np.argmax(np.einsum("ne,kme->nkm", image_embeddings, per_prompt).max(axis=-1), axis=1)
  return {
      "single_template": float(np.mean(zero_shot_predictions(image_embeddings, single_weights) == labels)),
      "ensemble": float(np.mean(zero_shot_predictions(image_embeddings, ensemble_classifier(per_prompt)) == labels)),
      "nearest_prompt": float(np.mean(nearest == labels)),
      "chance": 1.0 / len(names),
  }


def zero_shot_tasks(config: ml_collections.ConfigDict) -> dict[str, dict]:
  """The zero-shot tasks the dataset supports: each ClassLabel attribute of `eval.zero_shot`
  with a prompt ensemble in ENSEMBLES, and the shape-colour combination when both exist."""
  vocabularies = {name: class_names(config, name) for name in ("shape", "colour", "size", "position")}
  vocabularies = {k: v for k, v in vocabularies.items() if v is not None}
  if "position" in vocabularies:  # as the captions say it: "in the top left", "at the bottom right"
    vocabularies["where"] = tuple(shapes.where(p) for p in vocabularies.pop("position"))
  tasks = {}
  for attribute in config.eval.zero_shot:
    if attribute in vocabularies and attribute in ENSEMBLES:
      others = {k: v for k, v in vocabularies.items() if k != attribute}
      tasks[attribute] = {"names": vocabularies[attribute],
                          "ensemble": expand_templates(ENSEMBLES[attribute], others)}
  if "shape" in tasks and "colour" in tasks:
    names = tuple(f"{c} {s}" for s in vocabularies["shape"] for c in vocabularies["colour"])
    tasks["combination"] = {"names": names, "ensemble": expand_templates(
        ENSEMBLES["combination"], {k: v for k, v in vocabularies.items() if k in ("size", "where")})}
  return tasks


def _labels(records: list[dict], task: str, config: ml_collections.ConfigDict) -> np.ndarray:
  if task == "combination":
    num_colours = len(class_names(config, "colour"))
    return np.asarray([int(r["shape"]) * num_colours + int(r["colour"]) for r in records])
  return np.asarray([int(r[task]) for r in records])


# --- embeddings of a split ---------------------------------------------------------------------


def _embedders(objective, params, model_state):
  embed_image = functools.partial(objective.extras["embed_image"], params, model_state)
  embed_text = jax.jit(functools.partial(objective.extras["embed_text"], params, model_state))
  return jax.jit(embed_image), lambda tokens: np.asarray(embed_text(tokens))


def split_embeddings(objective, params, model_state, config, tokenizer, split: str,
                     limit: int | None = None):
  """Normalised image and caption embeddings (N, E) of a split's first `limit` records, and
  the records' other fields (labels, scenes), streamed in batches."""
  source = _source(config, split)
  count = len(source) if limit is None else min(limit, len(source))
  embed_image, embed_text = _embedders(objective, params, model_state)
  transform = record_fn(config, tokenizer, with_label=False)
  images, texts, fields = [], [], []
  for batch_records in _chunks(source, count, config.eval.batch_size):
    examples = [transform(r) for r in batch_records]
    real = len(examples)
    image_batch = _pad(np.stack([e["image"] for e in examples]), config.eval.batch_size)
    token_batch = _pad(np.stack([e["tokens"] for e in examples]), config.eval.batch_size)
    images.append(np.asarray(embed_image(image_batch))[:real])
    texts.append(embed_text(token_batch)[:real])
    fields += [{k: v for k, v in r.items() if k != "image"} for r in batch_records]
  return np.concatenate(images), np.concatenate(texts), fields


def _chunks(source, count: int, size: int):
  for start in range(0, count, size):
    yield source.__getitems__(range(start, min(start + size, count)))


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
  """(n, ...) -> (rows, ...) with zero rows, so every batch has one shape (one compilation)."""
  return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])


# --- retrieval ---------------------------------------------------------------------------------


def recall_at_k(similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
  """Share of queries (rows) with a relevant item among their k most similar columns.

  Args:
    similarity: (Q, N) query-candidate scores.
    relevant: (Q, N) bool, the candidates that count as a hit for each query.
  """
  order = np.argsort(-similarity, axis=1, kind="stable")  # (Q, N), best first
  hits = np.take_along_axis(relevant, order, axis=1)
  return {f"R@{k}": float(np.mean(np.any(hits[:, :k], axis=1))) for k in ks}


def chance_recall(relevant: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
  """Recall@k of a random ranking: 1 - C(N - m, k) / C(N, k) for a query with m relevant
  candidates among N, averaged over queries."""
  n = relevant.shape[1]
  m = relevant.sum(axis=1)
  out = {}
  for k in ks:
    miss = np.ones(len(m))
    for j in range(k):
      miss *= np.clip(n - m - j, 0, None) / (n - j)
    out[f"R@{k}"] = float(np.mean(1.0 - miss))
  return out


def retrieval(image_emb: np.ndarray, text_emb: np.ndarray, scenes: Sequence[str],
              ks: Sequence[int] = (1, 5)) -> dict:
  """Image-to-text and text-to-image recall@k among N pairs: strict (only the pair itself) and
  by scene (any item whose scene is the query's), each beside the chance of a random ranking."""
  similarity = image_emb @ text_emb.T  # (N, E) . (E, N) -> (N, N): image i, caption j
  scenes = np.asarray(scenes)
  relevant = {"strict": np.eye(len(scenes), dtype=bool), "scene": scenes[:, None] == scenes[None, :]}
  out = {}
  for name, rel in relevant.items():
    out[name] = {"image_to_text": recall_at_k(similarity, rel, ks),
                 "text_to_image": recall_at_k(similarity.T, rel.T, ks),
                 "chance": chance_recall(rel, ks)}
  out["pairs"] = len(scenes)
  return out


# --- linear probe on image features ------------------------------------------------------------


def _image_records(config, split: str, count: int):
  source = _source(config, split)
  return source.__getitems__(range(min(count, len(source))))


def _image_only(config):
  """record -> {"image"}: what the image tower's features need."""
  return lambda record: {"image": data.prepare_image(record["image"], config.data.image_size)}


def image_features(encode, config, split: str, count: int | None = None) -> np.ndarray:
  source = _source(config, split)
  count = len(source) if count is None else min(count, len(source))
  x, _ = features_lib.extract(encode, source, _image_only(config), batch_size=config.eval.batch_size,
                              indices=range(count))
  return x


def calibration_batch(config: ml_collections.ConfigDict) -> dict:
  """`eval.calibration_examples` training images drawn by `eval.seed`, with empty captions (the
  text tower's init reads only their shape): what the random-init image tower is calibrated on."""
  source = _source(config, config.data.train_split)
  count = min(config.eval.calibration_examples, len(source))
  indices = np.sort(np.random.default_rng(config.eval.seed).choice(len(source), count, replace=False))
  images = np.stack([data.prepare_image(r["image"], config.data.image_size) for r in source.__getitems__(indices.tolist())])
  return {"image": images, "tokens": np.zeros((count, config.text.seq_len), np.int32)}


def few_label_probe(train_x, train_y, test_x, test_y, eval_config, num_classes: int) -> dict[str, float]:
  """Accuracy of a linear probe fit on `labels_per_class` labels per class, mean and std over
  `label_draws` draws of the labelled subset (its L2 penalty chosen by cross-validation on it)."""
  accuracies = linear_probe.few_label_accuracies(
      train_x, train_y, test_x, test_y, **image.few_label_options(eval_config), num_classes=num_classes,
      l2=eval_config.probe_l2, max_steps=eval_config.probe_steps)
  return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies))}


def probe_report(encoders: dict, config, splits: Sequence[str], attributes: Sequence[str]) -> dict:
  """{split: {attribute: {encoder: {"mean", "std"}}}} of the few-label probe."""
  pool = config.eval.probe_pool
  train_records = _image_records(config, config.data.train_split, pool)
  test_records = {s: _image_records(config, s, config.eval.retrieval_examples) for s in splits}
  report = {s: {a: {} for a in attributes} for s in splits}
  num_classes = {a: len(class_names(config, a)) for a in attributes}
  for name, encode in encoders.items():
    train_x = image_features(encode, config, config.data.train_split, pool)
    for split in splits:
      test_x = image_features(encode, config, split, config.eval.retrieval_examples)
      for attribute in attributes:
        train_y = np.asarray([int(r[attribute]) for r in train_records])
        test_y = np.asarray([int(r[attribute]) for r in test_records[split]])
        report[split][attribute][name] = few_label_probe(
            train_x, train_y, test_x, test_y, config.eval, num_classes[attribute])
  for split in splits:
    for attribute in attributes:
      report[split][attribute]["chance"] = 1.0 / num_classes[attribute]
  return report


# --- the family's evaluation -------------------------------------------------------------------


def evaluation_splits(config: ml_collections.ConfigDict, split: str) -> list[str]:
  """`split`, and the held-out split too when `split` is the test split."""
  heldout = config.data.get("heldout_split")
  return [split, heldout] if heldout and split == config.data.test_split else [split]


def zero_shot_split(image_emb: np.ndarray, records: list[dict], embed_text, tokenizer, tasks: dict,
                    config: ml_collections.ConfigDict) -> dict:
  """{task: accuracies} of one split's normalised image embeddings."""
  return {task: zero_shot_accuracies(image_emb, _labels(records, task, config), embed_text, tokenizer, spec["names"],
                                     config.eval.zero_shot_template, spec["ensemble"], config.text.seq_len)
          for task, spec in tasks.items()}


def evaluate(objective, params, model_state, config: ml_collections.ConfigDict, workdir: str,
             split: str) -> dict:
  tokenizer = tokenizer_lib.load(workdir)
  splits = evaluation_splits(config, split)
  tasks = zero_shot_tasks(config)
  _, embed_text = _embedders(objective, params, model_state)
  report = {"dataset": config.data.name, "split": split, "splits": splits,
            "logit_scale": float(objective.extras["logit_scale"](params)), "zero_shot": {}, "retrieval": {}}
  for s in splits:
    image_emb, text_emb, records = split_embeddings(objective, params, model_state, config, tokenizer, s,
                                                    config.eval.retrieval_examples)
    if tasks:
      report["zero_shot"][s] = zero_shot_split(image_emb, records, embed_text, tokenizer, tasks, config)
    scenes = [as_str(r["scene"]) if "scene" in r else caption_of(r, config.data.caption_key) for r in records]
    report["retrieval"][s] = retrieval(image_emb, text_emb, scenes)
  attributes = [a for a in config.eval.zero_shot if class_names(config, a) is not None]
  if attributes and config.eval.labels_per_class:
    encoders = {objective.name: functools.partial(objective.features, params, model_state),
                "random_init": image.random_init_encoder(config, calibration_batch(config))}
    report["linear_probe"] = probe_report(encoders, config, splits, attributes)
  return report


def format_results(report: dict) -> str:
  lines = [f"CLIP evaluation on {report['dataset']} (splits: {', '.join(report['splits'])}); "
           f"logit scale {report['logit_scale']:.1f}"]
  for split, tasks in report["zero_shot"].items():
    lines.append(f"\nZero-shot accuracy, {split}:")
    lines.append(f"{'task':<14}{'one template':>14}{'ensemble':>12}{'nearest prompt':>16}{'chance':>10}")
    for task, row in tasks.items():
      lines.append(f"{task:<14}{row['single_template']:>14.4f}{row['ensemble']:>12.4f}"
                   f"{row['nearest_prompt']:>16.4f}{row['chance']:>10.4f}")
  for split, result in report["retrieval"].items():
    lines.append(f"\nRetrieval among {result['pairs']} pairs, {split} (recall@1 / recall@5):")
    lines.append(f"{'match':<8}{'image->text':>18}{'text->image':>18}{'chance':>18}")
    for match in ("strict", "scene"):
      row = result[match]
      cells = [f"{row[d]['R@1']:.3f} / {row[d]['R@5']:.3f}" for d in ("image_to_text", "text_to_image", "chance")]
      lines.append(f"{match:<8}" + "".join(c.rjust(18) for c in cells))
  for split, attributes in report.get("linear_probe", {}).items():
    lines.append(f"\nLinear probe on image features, {split} (mean ± std over label draws):")
    for attribute, row in attributes.items():
      cells = [f"{name} {v['mean']:.4f} ± {v['std']:.4f}" for name, v in row.items() if name != "chance"]
      lines.append(f"  {attribute:<10}" + "   ".join(cells) + f"   chance {row['chance']:.4f}")
  return "\n".join(lines)


# --- monitor -----------------------------------------------------------------------------------


def zero_shot_monitor(objective, config: ml_collections.ConfigDict, workdir: str) -> Monitor:
  """Prompt-ensemble zero-shot accuracy of each attribute on the validation split (never test)."""

  tasks = zero_shot_tasks(config)

  def fn(params, model_state):
    tokenizer = tokenizer_lib.load(workdir)
    split = config.data.eval_split
    image_emb, _, records = split_embeddings(objective, params, model_state, config, tokenizer, split,
                                             config.eval.retrieval_examples)
    _, embed_text = _embedders(objective, params, model_state)
    result = zero_shot_split(image_emb, records, embed_text, tokenizer, tasks, config)
    return {f"val_zero_shot_{task}": row["ensemble"] for task, row in result.items()}

  return Monitor(every=config.train.eval_every, fn=fn)


def monitors(objective, config: ml_collections.ConfigDict, workdir: str) -> list[Monitor]:
  if not config.train.eval_every or not zero_shot_tasks(config):
    return []
  return [zero_shot_monitor(objective, config, workdir)]


FAMILY = Family(name="image_text", train_input=train_input, monitors=monitors, evaluate=evaluate,
                format_results=format_results)

