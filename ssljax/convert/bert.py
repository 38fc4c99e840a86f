"""BERT (Devlin et al. 2019) in the Hugging Face layout (`BertForPreTraining`, `BertForMaskedLM`,
`BertModel`) as an ssljax "bert" run, and back.

The published BERT's block is post-LayerNorm (LN(x + Attn(x)), LN(x + MLP(x)), no final
LayerNorm) with a LayerNorm on the summed embeddings, the exact (erf) GELU and epsilon 1e-12:
`config.model.norm_position="post"`, `embed_norm=True`, `activation="gelu"`. Its heads are
ssljax's `BertPretraining` heads: the pooler (dense + tanh on [CLS]), the masked-LM transform
(dense, activation, LayerNorm) with the tied embedding and an output bias, and the
next-sentence classifier, whose two classes are in the opposite order (Hugging Face: 0 = "B
follows A"; ssljax: 1 = "B follows A"), so its rows are swapped both ways.

A checkpoint without some heads (`BertModel` has no masked-LM and next-sentence heads,
`BertForMaskedLM` no pooler and next-sentence head) is imported with those heads as a fresh
initialisation would make them, and the import says which.
"""

from __future__ import annotations

from typing import Any

from ssljax.convert import blocks, hf_files, layouts
from ssljax.convert.hf_files import ConversionError
from ssljax.models import transformer

ARCHITECTURES = ("BertForPreTraining", "BertForMaskedLM", "BertModel")
OBJECTIVE = "bert"
# What transformers' tokenizer returns for the exported model: BERT's segment ids too.
MODEL_INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
EXPORT_ARCHITECTURE = "BertForPreTraining"
IGNORED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "position_ids")  # tied, buffers

NAMES = blocks.BlockNames(
    attn_norm="encoder.layer.{i}.attention.output.LayerNorm", mlp_norm="encoder.layer.{i}.output.LayerNorm",
    fc_in="encoder.layer.{i}.intermediate.dense", fc_out="encoder.layer.{i}.output.dense",
    attention_out="encoder.layer.{i}.attention.output.dense",
    qkv=tuple(f"encoder.layer.{{i}}.attention.self.{x}" for x in ("query", "key", "value")))

REQUIRED = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False,
            "tie_word_embeddings": True}
HEADS = ("pooler", "mlm", "nsp")


def model_keys(hf: dict[str, Any]) -> dict[str, Any]:
  """`config.model` keys of the checkpoint's shapes and options. Dropout is off: the pretraining
  step's dropout masks depend on how the batch is split over devices (objectives/bert.py), and
  continued pretraining of a published model does without it; `--config.model.dropout` turns
  it on (fine-tuning has its own, per example)."""
  hf_files.check_required(hf, REQUIRED, "ssljax's BERT")
  return {"preset": "tiny", "num_layers": hf["num_hidden_layers"], "num_heads": hf["num_attention_heads"],
          "embed_dim": hf["hidden_size"], "mlp_dim": hf["intermediate_size"],
          "max_len": hf["max_position_embeddings"], "num_segments": hf.get("type_vocab_size", 2),
          "norm_position": "post", "embed_norm": True, "activation": hf.get("hidden_act", "gelu"),
          "head_activation": hf.get("hidden_act", "gelu"), "layer_norm_epsilon": hf.get("layer_norm_eps", 1e-12),
          "mask_padded_vocab": True, "relative_buckets": 0, "dropout": 0.0}


def tensor_name(name: str) -> tuple[str, ...]:
  """Where the checkpoint may hold `name`: the encoder and pooler under "bert." (task models) or
  bare (BertModel); LayerNorms as weight/bias or the original gamma/beta."""
  names = (name,) if name.startswith("cls.") else ("bert." + name, name)
  if ".LayerNorm." in name:
    old = name.replace(".LayerNorm.weight", ".LayerNorm.gamma").replace(".LayerNorm.bias", ".LayerNorm.beta")
    names += (old,) if old.startswith("cls.") else ("bert." + old, old)
  return names


def export_name(name: str) -> str:
  """BertForPreTraining's name: the encoder and pooler under "bert.", the heads under "cls."."""
  return name if name.startswith("cls.") else "bert." + name


def _swap_classes(rule_name: str, ours: str, shape) -> layouts.Rule:
  """The next-sentence classifier with its two classes swapped: (2, D) weight -> (D, 2) kernel."""
  if ours.endswith("kernel"):
    return layouts.Rule(ours, (rule_name,), lambda t: t[0].T[:, ::-1], lambda a: [a[:, ::-1].T], (shape,))
  return layouts.Rule(ours, (rule_name,), lambda t: t[0][::-1], lambda a: [a[::-1]], (shape,))


def rules(cfg: transformer.TransformerConfig, real_vocab: int) -> dict[str, list[layouts.Rule]]:
  """The rules of `BertPretraining(cfg)`'s parameters, by part: "encoder" and the three heads."""
  d = cfg.embed_dim
  encoder = ([layouts.vocab_rows("encoder/token_embed/embedding", "embeddings.word_embeddings.weight", real_vocab,
                                 cfg.vocab_size, d),
              layouts.copy("encoder/position_embed/embedding", "embeddings.position_embeddings.weight",
                           (cfg.max_len, d)),
              layouts.copy("encoder/segment_embed/embedding", "embeddings.token_type_embeddings.weight",
                           (cfg.num_segments, d))]
             + layouts.norm("encoder/embed_norm", "embeddings.LayerNorm", d)
             + blocks.stack_rules("encoder/", NAMES, cfg.num_layers, d, cfg.num_heads, cfg.mlp_dim))
  return {
      "encoder": encoder,
      "pooler": layouts.linear("pooler", "pooler.dense", d, d),
      "mlm": (layouts.linear("mlm_transform", "cls.predictions.transform.dense", d, d)
              + layouts.norm("mlm_norm", "cls.predictions.transform.LayerNorm", d)
              + [layouts.vocab_rows("mlm_output_bias", "cls.predictions.bias", real_vocab, cfg.vocab_size)]),
      "nsp": [_swap_classes("cls.seq_relationship.weight", "nsp_classifier/kernel", (2, d)),
              _swap_classes("cls.seq_relationship.bias", "nsp_classifier/bias", (2,))],
  }


def hf_config(cfg: transformer.TransformerConfig, real_vocab: int, special_ids: dict[str, int],
              head_activation: str) -> dict[str, Any]:
  """config.json of an export of `BertPretraining(cfg)`."""
  if cfg.norm_position != "post" or not cfg.embed_norm:
    raise ConversionError("a Hugging Face BERT has post-LayerNorm blocks and a LayerNorm on the embeddings; this "
                          f"run's encoder has norm_position={cfg.norm_position!r}, embed_norm={cfg.embed_norm}")
  if head_activation != cfg.activation:
    raise ConversionError(f"a Hugging Face BERT uses one activation (hidden_act) in its blocks and its masked-LM "
                          f"head; this run has {cfg.activation!r} and {head_activation!r}")
  return {"architectures": [EXPORT_ARCHITECTURE], "model_type": "bert", "vocab_size": real_vocab,
          "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
          "intermediate_size": cfg.mlp_dim, "hidden_act": cfg.activation, "hidden_dropout_prob": cfg.dropout,
          "attention_probs_dropout_prob": 0.0, "max_position_embeddings": cfg.max_len,
          "type_vocab_size": cfg.num_segments, "layer_norm_eps": cfg.layer_norm_epsilon,
          "position_embedding_type": "absolute", "pad_token_id": special_ids["pad"], "tie_word_embeddings": True}


def present_heads(has) -> tuple[str, ...]:
  """The heads a checkpoint holds, from `has(name)` over its tensor names."""
  found = {"pooler": any(has(n) for n in tensor_name("pooler.dense.weight")),
           "mlm": has("cls.predictions.bias"),
           "nsp": has("cls.seq_relationship.weight")}
  return tuple(h for h in HEADS if found[h])

