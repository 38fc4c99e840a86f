"""Image-text retrieval: recall@k of paired embeddings, beside the recall of a random ranking."""

from __future__ import annotations

from typing import Sequence

import numpy as np


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
  """Image-to-text and text-to-image recall@k among N pairs (image i and caption i): strict (only
  the pair itself) and by scene (any item whose scene is the query's, for datasets whose captions
  repeat scenes), each beside the chance of a random ranking."""
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
