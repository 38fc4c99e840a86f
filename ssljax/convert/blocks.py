"""The rules of a Transformer stack that the three architectures share: embeddings, blocks and
LayerNorms in ssljax's `models.Transformer` / `models.ViT` names, from each architecture's own
names for them (`BlockNames`)."""

from __future__ import annotations

import dataclasses

from ssljax.convert import layouts


@dataclasses.dataclass(frozen=True)
class BlockNames:
  """One block's tensor names, with "{i}" for the layer index."""

  attn_norm: str
  mlp_norm: str
  fc_in: str
  fc_out: str
  attention_out: str
  qkv: tuple[str, str, str] | str  # three Linear projections, or GPT-2's fused c_attn


def block_rules(ours: str, names: BlockNames, layer: int, width: int, heads: int, mlp: int) -> list[layouts.Rule]:
  """The rules of ssljax's `blocks_{layer}` under `ours` (a "/" prefix, may be "")."""
  b = f"{ours}blocks_{layer}"
  n = lambda name: name.format(i=layer)  # noqa: E731
  fused = isinstance(names.qkv, str)
  rules = layouts.norm(f"{b}/attn_norm", n(names.attn_norm), width)
  if fused:
    rules += layouts.fused_qkv(f"{b}/attention/qkv", n(names.qkv), width, heads)
    rules += layouts.attention_out(f"{b}/attention/out", n(names.attention_out), width, heads, transposed=False)
    rules += layouts.conv1d(f"{b}/mlp/fc_in", n(names.fc_in), width, mlp)
    rules += layouts.conv1d(f"{b}/mlp/fc_out", n(names.fc_out), mlp, width)
  else:
    rules += layouts.separate_qkv(f"{b}/attention/qkv", [n(q) for q in names.qkv], width, heads)
    rules += layouts.attention_out(f"{b}/attention/out", n(names.attention_out), width, heads)
    rules += layouts.linear(f"{b}/mlp/fc_in", n(names.fc_in), width, mlp)
    rules += layouts.linear(f"{b}/mlp/fc_out", n(names.fc_out), mlp, width)
  return rules + layouts.norm(f"{b}/mlp_norm", n(names.mlp_norm), width)


def stack_rules(ours: str, names: BlockNames, layers: int, width: int, heads: int, mlp: int) -> list[layouts.Rule]:
  return [rule for i in range(layers) for rule in block_rules(ours, names, i, width, heads, mlp)]
