"""CLIP (Radford et al. 2021) in the Hugging Face layout (`CLIPModel`: OpenAI's checkpoints, and
open_clip's in that layout) as an ssljax "clip" run with a ViT image tower, and back.

Both towers are pre-LayerNorm Transformers with OpenAI's sigmoid GELU ("quick_gelu") where the
config says so. The image tower is ssljax's `ViT`: patch embedding without bias, class token,
learned positions, the "pre_layrnorm" before the first block, and the "post_layernorm" of the
class token; the images are normalised by the mean and std of preprocessor_config.json (OpenAI's
when there is none). The text feature is the final LayerNorm's output at the first [EOS]
(`models.clip.eos_positions`), as `transformers` reads it when `eos_token_id` is the tokenizer's
end-of-text token; a legacy config with eos_token_id 2 reads the position of the largest id,
which is the same token when the end-of-text token is the vocabulary's last.
"""

from __future__ import annotations

from typing import Any

from ssljax.convert import blocks, layouts
from ssljax.convert.hf_files import ConversionError
from ssljax.models import transformer, vit

ARCHITECTURES = ("CLIPModel",)
OBJECTIVE = "clip"
# What transformers' tokenizer returns for the exported model (CLIPTokenizerFast's inputs).
MODEL_INPUT_NAMES = ("input_ids", "attention_mask")
EXPORT_ARCHITECTURE = "CLIPModel"
IGNORED = ("position_ids",)
# transformers' CLIPImageProcessor defaults (OpenAI's dataset statistics).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
LEGACY_EOS_ID = 2


def _names(tower: str) -> blocks.BlockNames:
  layer = f"{tower}.encoder.layers.{{i}}"
  return blocks.BlockNames(attn_norm=f"{layer}.layer_norm1", mlp_norm=f"{layer}.layer_norm2",
                           fc_in=f"{layer}.mlp.fc1", fc_out=f"{layer}.mlp.fc2",
                           attention_out=f"{layer}.self_attn.out_proj",
                           qkv=tuple(f"{layer}.self_attn.{x}_proj" for x in "qkv"))


def tensor_name(name: str) -> tuple[str, ...]:
  return (name,)


def export_name(name: str) -> str:
  return name


def check(hf: dict[str, Any]) -> None:
  vision = hf.get("vision_config", {})
  if vision.get("num_channels", 3) != 3:
    raise ConversionError(f"config.json sets vision_config.num_channels={vision['num_channels']}; ssljax's image "
                          "data has 3 channels")


def model_keys(hf: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
  check(hf)
  t, v = hf.get("text_config", {}), hf.get("vision_config", {})
  mean = tuple((preprocessor or {}).get("image_mean", OPENAI_MEAN))
  std = tuple((preprocessor or {}).get("image_std", OPENAI_STD))
  return {"image_tower": "vit", "vit_preset": "vit_b16", "vit_patch_size": v.get("patch_size", 32),
          "vit_num_layers": v.get("num_hidden_layers", 12), "vit_num_heads": v.get("num_attention_heads", 12),
          "vit_embed_dim": v.get("hidden_size", 768), "vit_mlp_dim": v.get("intermediate_size", 3072),
          "vit_activation": v.get("hidden_act", "quick_gelu"), "vit_layer_norm_epsilon": v.get("layer_norm_eps", 1e-5),
          "vit_pixel_mean": mean, "vit_pixel_std": std,
          "text_preset": "tiny", "text_num_layers": t.get("num_hidden_layers", 12),
          "text_num_heads": t.get("num_attention_heads", 8), "text_embed_dim": t.get("hidden_size", 512),
          "text_mlp_dim": t.get("intermediate_size", 2048), "text_activation": t.get("hidden_act", "quick_gelu"),
          "text_layer_norm_epsilon": t.get("layer_norm_eps", 1e-5), "embed_dim": hf.get("projection_dim", 512)}


def check_eos(hf: dict[str, Any], eos_id: int, num_tokens: int) -> None:
  """The text feature is read at the tokenizer's end-of-text token; a config that names another
  token (other than the legacy 2, which means the largest id) would read another position."""
  named = hf.get("text_config", {}).get("eos_token_id", eos_id)
  if named == LEGACY_EOS_ID and eos_id != num_tokens - 1:
    raise ConversionError(f"config.json's text_config.eos_token_id is 2 (the text feature at the largest id), but "
                          f"the tokenizer's end-of-text token {eos_id} is not its last id ({num_tokens - 1})")
  if named not in (LEGACY_EOS_ID, eos_id):
    raise ConversionError(f"config.json's text_config.eos_token_id={named} is not the tokenizer's end-of-text "
                          f"token ({eos_id})")


def rules(text: transformer.TransformerConfig, image: vit.ViTConfig, embed_dim: int, real_vocab: int,
          image_size: int) -> list[layouts.Rule]:
  """The rules of `models.CLIP`'s parameters with a ViT image tower."""
  dt, di, p = text.embed_dim, image.embed_dim, image.patch_size
  positions = (image_size // p) ** 2 + 1
  text_rules = ([layouts.vocab_rows("text_tower/token_embed/embedding", "text_model.embeddings.token_embedding.weight",
                                    real_vocab, text.vocab_size, dt),
                 layouts.copy("text_tower/position_embed/embedding", "text_model.embeddings.position_embedding.weight",
                              (text.max_len, dt))]
                + blocks.stack_rules("text_tower/", _names("text_model"), text.num_layers, dt, text.num_heads,
                                     text.mlp_dim)
                + layouts.norm("text_tower/final_norm", "text_model.final_layer_norm", dt))
  embeddings = "vision_model.embeddings"
  image_rules = ([
      layouts.Rule("image_tower/class_token", (f"{embeddings}.class_embedding",), lambda t: t[0].reshape(1, 1, di),
                   lambda a: [a.reshape(di)], ((di,),)),
      # PyTorch's (out, in, kh, kw) convolution as Flax's (kh, kw, in, out).
      layouts.Rule("image_tower/patch_embed/kernel", (f"{embeddings}.patch_embedding.weight",),
                   lambda t: t[0].transpose(2, 3, 1, 0), lambda a: [a.transpose(3, 2, 0, 1)], ((di, 3, p, p),)),
      layouts.Rule("image_tower/position_embed", (f"{embeddings}.position_embedding.weight",), lambda t: t[0][None],
                   lambda a: [a[0]], ((positions, di),))]
      + layouts.norm("image_tower/pre_norm", "vision_model.pre_layrnorm", di)
      + blocks.stack_rules("image_tower/", _names("vision_model"), image.num_layers, di, image.num_heads,
                           image.mlp_dim)
      + layouts.norm("image_tower/final_norm", "vision_model.post_layernorm", di))
  return (text_rules + image_rules
          + layouts.linear("image_projection", "visual_projection", di, embed_dim, bias=False)
          + layouts.linear("text_projection", "text_projection", dt, embed_dim, bias=False)
          + [layouts.copy("log_scale", "logit_scale", ())])


def hf_config(text: transformer.TransformerConfig, image: vit.ViTConfig, embed_dim: int, real_vocab: int,
              image_size: int, special_ids: dict[str, int]) -> dict[str, Any]:
  """config.json of an export."""
  text_config = {"model_type": "clip_text_model", "vocab_size": real_vocab, "hidden_size": text.embed_dim,
                 "intermediate_size": text.mlp_dim, "num_hidden_layers": text.num_layers,
                 "num_attention_heads": text.num_heads, "max_position_embeddings": text.max_len,
                 "hidden_act": text.activation, "layer_norm_eps": text.layer_norm_epsilon,
                 "eos_token_id": special_ids["eos"], "bos_token_id": special_ids.get("bos", special_ids["eos"]),
                 "pad_token_id": special_ids.get("pad", special_ids["eos"]), "projection_dim": embed_dim}
  vision_config = {"model_type": "clip_vision_model", "hidden_size": image.embed_dim,
                   "intermediate_size": image.mlp_dim, "num_hidden_layers": image.num_layers,
                   "num_attention_heads": image.num_heads, "image_size": image_size, "patch_size": image.patch_size,
                   "num_channels": 3, "hidden_act": image.activation, "layer_norm_eps": image.layer_norm_epsilon,
                   "projection_dim": embed_dim}
  return {"architectures": [EXPORT_ARCHITECTURE], "model_type": "clip", "projection_dim": embed_dim,
          "text_config": text_config, "vision_config": vision_config}


def preprocessor_config(image: vit.ViTConfig, image_size: int) -> dict[str, Any]:
  """preprocessor_config.json: the image size and the normalisation the image tower expects."""
  mean = image.pixel_mean or (0.0, 0.0, 0.0)
  std = image.pixel_std or (1.0, 1.0, 1.0)
  return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
          "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size}, "do_rescale": True,
          "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(mean), "image_std": list(std),
          "do_convert_rgb": True}
