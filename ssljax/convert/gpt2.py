"""GPT-2 (Radford et al. 2019) in the Hugging Face layout (`GPT2LMHeadModel`, `GPT2Model`) as an
ssljax "gpt" run, and back.

GPT-2's block is ssljax's default: pre-LayerNorm, a final LayerNorm, learned positions, the output
projection tied to the token embedding, GELU in its tanh form ("gelu_new"). Its config.json
fields map to `config.model` as below; what the block cannot express is refused by name.
"""

from __future__ import annotations

from typing import Any

from ssljax.convert import blocks, hf_files, layouts
from ssljax.models import transformer

ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
OBJECTIVE = "gpt"
# What transformers' tokenizer returns for the exported model (GPT2TokenizerFast's inputs).
MODEL_INPUT_NAMES = ("input_ids", "attention_mask")
EXPORT_ARCHITECTURE = "GPT2LMHeadModel"
EXPORT_PREFIX = "transformer."
TENSOR_PREFIXES = ("transformer.", "")  # GPT2LMHeadModel's, GPT2Model's (and OpenAI's upload)
IGNORED = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # the causal mask buffers; the tied head

NAMES = blocks.BlockNames(attn_norm="h.{i}.ln_1", mlp_norm="h.{i}.ln_2", fc_in="h.{i}.mlp.c_fc",
                          fc_out="h.{i}.mlp.c_proj", attention_out="h.{i}.attn.c_proj", qkv="h.{i}.attn.c_attn")

# Fields whose values the block does not implement, with the one it does.
REQUIRED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
            "tie_word_embeddings": True}


def tensor_name(name: str) -> tuple[str, ...]:
  """Where the checkpoint may hold `name`."""
  return tuple(prefix + name for prefix in TENSOR_PREFIXES)


def export_name(name: str) -> str:
  return EXPORT_PREFIX + name


def model_keys(hf: dict[str, Any]) -> dict[str, Any]:
  """`config.model` keys of the checkpoint's shapes and options. Dropout is off: the pretraining
  step's dropout masks depend on how the batch is split over devices (objectives/gpt.py), and
  continued pretraining of a published model does without it; `--config.model.dropout` turns
  it on (fine-tuning has its own, per example)."""
  hf_files.check_required(hf, REQUIRED, "ssljax's Transformer")
  width = hf["n_embd"]
  return {"preset": "tiny", "num_layers": hf["n_layer"], "num_heads": hf["n_head"], "embed_dim": width,
          "mlp_dim": hf.get("n_inner") or 4 * width, "max_len": hf["n_positions"],
          "norm_position": "pre", "embed_norm": False, "activation": hf.get("activation_function", "gelu_new"),
          "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5), "mask_padded_vocab": True,
          "relative_buckets": 0, "qkv_conv_width": 0, "dropout": 0.0}


def rules(cfg: transformer.TransformerConfig, real_vocab: int) -> list[layouts.Rule]:
  """GPT-2's tensors as the parameters of ssljax's `Transformer(cfg)`."""
  width = cfg.embed_dim
  return ([layouts.vocab_rows("token_embed/embedding", "wte.weight", real_vocab, cfg.vocab_size, width),
           layouts.copy("position_embed/embedding", "wpe.weight", (cfg.max_len, width))]
          + blocks.stack_rules("", NAMES, cfg.num_layers, width, cfg.num_heads, cfg.mlp_dim)
          + layouts.norm("final_norm", "ln_f", width))


def hf_config(cfg: transformer.TransformerConfig, real_vocab: int, special_ids: dict[str, int]) -> dict[str, Any]:
  """config.json of an export of `Transformer(cfg)`."""
  return {"architectures": [EXPORT_ARCHITECTURE], "model_type": "gpt2", "vocab_size": real_vocab,
          "n_positions": cfg.max_len, "n_embd": cfg.embed_dim, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
          "n_inner": cfg.mlp_dim, "activation_function": cfg.activation, "layer_norm_epsilon": cfg.layer_norm_epsilon,
          "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": 0.0, "tie_word_embeddings": True,
          "scale_attn_weights": True, "bos_token_id": special_ids.get("bos", special_ids["eos"]),
          "eos_token_id": special_ids["eos"]}
