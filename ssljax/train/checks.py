"""Config checks that run before anything is built, so a bad run stops at once with a message
that names the offending key."""

from __future__ import annotations

import jax
import ml_collections

from ssljax import objectives


class ConfigError(ValueError):
  pass


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def check(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  device_count = jax.device_count() if device_count is None else device_count
  _require(config.objective in objectives.names(),
           f"config.objective={config.objective!r} is not a registered objective; "
           f"choose one of {objectives.names()}")
  batch = config.train.batch_size
  _require(batch > 0, f"config.train.batch_size must be positive, got {batch}")
  _require(
      batch % device_count == 0,
      f"config.train.batch_size={batch} is not divisible by the {device_count} devices; "
      f"use a multiple of {device_count}",
  )
  _require(
      batch % jax.process_count() == 0,
      f"config.train.batch_size={batch} is not divisible by the {jax.process_count()} processes",
  )
  _require(config.train.steps > 0, f"config.train.steps must be positive, got {config.train.steps}")
  _require(config.train.log_every > 0, f"config.train.log_every must be positive, got {config.train.log_every}")
  _require(config.train.checkpoint_every > 0,
           f"config.train.checkpoint_every must be positive, got {config.train.checkpoint_every}")
  _require(config.train.keep_checkpoints > 0,
           f"config.train.keep_checkpoints must be positive, got {config.train.keep_checkpoints}")
  _require(config.train.knn_every >= 0, f"config.train.knn_every must be >= 0, got {config.train.knn_every}")
  _require(config.optim.lr > 0, f"config.optim.lr must be positive, got {config.optim.lr}")
  _require(config.optim.weight_decay >= 0, f"config.optim.weight_decay must be >= 0, got {config.optim.weight_decay}")
  _require(config.optim.warmup_steps >= 0, f"config.optim.warmup_steps must be >= 0, got {config.optim.warmup_steps}")
  if "label_draws" in config.eval:
    _require(config.eval.label_draws >= 1, f"config.eval.label_draws must be >= 1, got {config.eval.label_draws}")
    _require(config.eval.labels_per_class >= 1,
             f"config.eval.labels_per_class must be >= 1, got {config.eval.labels_per_class}")
    _require(config.eval.calibration_examples >= 2,
             f"config.eval.calibration_examples must be >= 2, got {config.eval.calibration_examples}")
  if "text" in config:
    t = config.text
    _require(t.tokenizer in ("sentencepiece", "byte"),
             f"config.text.tokenizer must be 'sentencepiece' or 'byte', got {t.tokenizer!r}")
    # SentencePiece with byte fallback holds 6 special and 256 byte pieces before any other.
    _require(t.tokenizer != "sentencepiece" or t.model_file or t.vocab_size > 262,
             f"config.text.vocab_size must exceed 262 (6 special + 256 byte pieces), got {t.vocab_size}")
    _require(t.model_type in ("unigram", "bpe"), f"config.text.model_type must be 'unigram' or 'bpe', got {t.model_type!r}")
    _require(t.seq_len >= 2, f"config.text.seq_len must be >= 2, got {t.seq_len}")
    _require(t.icl_documents >= 0, f"config.text.icl_documents must be >= 0, got {t.icl_documents}")
    _require(t.get("max_training_texts") is None or t.max_training_texts > 0,
             f"config.text.max_training_texts must be None (all) or positive, got {t.get('max_training_texts')}")
    _require(config.train.eval_every >= 0, f"config.train.eval_every must be >= 0, got {config.train.eval_every}")
  _require(config.eval.batch_size > 0, f"config.eval.batch_size must be positive, got {config.eval.batch_size}")
  if "loss" in config and "temperature" in config.loss:
    _require(config.loss.temperature > 0, f"config.loss.temperature must be positive, got {config.loss.temperature}")
  if "loss" in config and "block_size" in config.loss:
    _require(config.loss.block_size >= 0, f"config.loss.block_size must be >= 0 (0 = dense), got {config.loss.block_size}")
