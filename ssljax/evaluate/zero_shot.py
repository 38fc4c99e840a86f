"""Zero-shot classification from prompts (Radford et al. 2021, arXiv 2103.00020, Section 3.1).

Every class name is put into prompt templates ("a photo of a {}."), a text tower embeds the
prompts, and an image is given the class whose classifier weight has the highest cosine with its
embedding. With several templates (a prompt ensemble, Section 3.1.4) a class's weight is the
normalised mean of its prompts' normalised embeddings. Embeddings here are L2-normalised (N, E)
arrays; what embeds them is the caller's.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

# list of prompts -> (len(prompts), E) normalised text embeddings
EmbedPrompts = Callable[[list[str]], np.ndarray]


def ensemble_classifier(text_embeddings: np.ndarray) -> np.ndarray:
  """CLIP's prompt ensemble: (K classes, M prompts, E) normalised prompt embeddings -> (K, E),
  each class's mean embedding, normalised again."""
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


def class_text_embeddings(embed_prompts: EmbedPrompts, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
  """(K, M, E) normalised embeddings of every class name in every template, embedded in one call."""
  prompts = [t.format(name) for name in names for t in templates]
  return np.asarray(embed_prompts(prompts)).reshape(len(names), len(templates), -1)  # (K * M, E) -> (K, M, E)


def predictions(image_embeddings: np.ndarray, classifier: np.ndarray) -> np.ndarray:
  """(N, E) normalised images, (K, E) class weights -> (N,) the class of highest cosine."""
  return np.argmax(image_embeddings @ classifier.T, axis=1)  # (N, E) . (E, K) -> (N, K)


def accuracies(image_embeddings: np.ndarray, labels: np.ndarray, embed_prompts: EmbedPrompts,
               names: Sequence[str], single: str, ensemble: Sequence[str]) -> dict[str, float]:
  """Accuracy with one template (`single`), with the prompt ensemble, and with the ensemble's
  nearest prompt (each class scored by its best-matching prompt instead of their mean: what the
  mean loses when the embedding is not additive in the attributes), beside chance (1 / K)."""
  single_weights = class_text_embeddings(embed_prompts, names, [single])[:, 0]
  per_prompt = class_text_embeddings(embed_prompts, names, ensemble)  # (K, M, E)
  nearest = np.argmax(np.einsum("ne,kme->nkm", image_embeddings, per_prompt).max(axis=-1), axis=1)
  return {
      "single_template": float(np.mean(predictions(image_embeddings, single_weights) == labels)),
      "ensemble": float(np.mean(predictions(image_embeddings, ensemble_classifier(per_prompt)) == labels)),
      "nearest_prompt": float(np.mean(nearest == labels)),
      "chance": 1.0 / len(names),
  }
