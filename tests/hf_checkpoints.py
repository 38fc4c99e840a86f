"""Small random checkpoints in the Hugging Face layout, made with `transformers` itself (no
download): a model of the given shapes with `save_pretrained`, and a tokenizer trained with the
`tokenizers` package on the bundled BBC articles, saved beside it. Used by tests/test_convert.py
and the pretrained notebook's offline run."""

from __future__ import annotations

import functools
import os

ENDOFTEXT, STARTOFTEXT = "<|endoftext|>", "<|startoftext|>"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@functools.lru_cache(maxsize=1)
def training_texts() -> tuple[str, ...]:
  from ssljax.data import bbc_news

  return tuple(a["text"] for a in bbc_news.read_articles() if a["split"] == "train")[:300]


def byte_level_bpe(vocab_size: int, specials: tuple[str, ...]):
  """A GPT-2-style byte-level BPE with `specials` at the end of the vocabulary."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), special_tokens=[], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(training_texts(), trainer)
  tok.add_special_tokens(list(specials))
  return tok


def gpt2_tokenizer(vocab_size: int):
  from transformers import PreTrainedTokenizerFast

  tok = byte_level_bpe(vocab_size, (ENDOFTEXT,))
  return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                 unk_token=ENDOFTEXT)


def clip_tokenizer(vocab_size: int):
  from tokenizers import processors
  from transformers import PreTrainedTokenizerFast

  tok = byte_level_bpe(vocab_size, (STARTOFTEXT, ENDOFTEXT))
  start, end = tok.token_to_id(STARTOFTEXT), tok.token_to_id(ENDOFTEXT)
  tok.post_processor = processors.TemplateProcessing(single=f"{STARTOFTEXT} $A {ENDOFTEXT}",
                                                     special_tokens=[(STARTOFTEXT, start), (ENDOFTEXT, end)])
  return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=STARTOFTEXT, eos_token=ENDOFTEXT,
                                 pad_token=ENDOFTEXT, unk_token=ENDOFTEXT)


def bert_tokenizer(vocab_size: int):
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast

  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.train_from_iterator(training_texts(), trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                      special_tokens=list(BERT_SPECIALS),
                                                                      show_progress=False))
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                     special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", mask_token="[MASK]")


def _save(model, tokenizer, directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  model.save_pretrained(directory)
  tokenizer.save_pretrained(directory)
  return directory


def gpt2(directory: str, *, layers=3, heads=3, width=48, positions=64, vocab=333, seed=0, activation="gelu_new"):
  import torch
  from transformers import GPT2Config, GPT2LMHeadModel

  torch.manual_seed(seed)
  tokenizer = gpt2_tokenizer(vocab)
  eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
  config = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                      activation_function=activation, bos_token_id=eos, eos_token_id=eos)
  model = GPT2LMHeadModel(config).eval()
  _randomise_norms(model, seed)
  return _save(model, tokenizer, directory)


def bert(directory: str, *, layers=3, heads=3, width=48, positions=64, vocab=333, seed=0,
         architecture="BertForPreTraining"):
  import torch
  import transformers

  torch.manual_seed(seed)
  tokenizer = bert_tokenizer(vocab)
  config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers,
                                   num_attention_heads=heads, intermediate_size=2 * width,
                                   max_position_embeddings=positions, pad_token_id=tokenizer.pad_token_id)
  model = getattr(transformers, architecture)(config).eval()
  _randomise_norms(model, seed)
  return _save(model, tokenizer, directory)


def clip(directory: str, *, text_layers=2, text_heads=2, text_width=32, vision_layers=3, vision_heads=3,
         vision_width=48, image_size=32, patch=8, positions=16, vocab=333, projection=24, seed=0):
  import torch
  from transformers import CLIPConfig, CLIPModel

  torch.manual_seed(seed)
  tokenizer = clip_tokenizer(vocab)
  eos, bos = tokenizer.convert_tokens_to_ids(ENDOFTEXT), tokenizer.convert_tokens_to_ids(STARTOFTEXT)
  config = CLIPConfig(
      text_config=dict(vocab_size=len(tokenizer), hidden_size=text_width, num_hidden_layers=text_layers,
                       num_attention_heads=text_heads, intermediate_size=2 * text_width,
                       max_position_embeddings=positions, eos_token_id=eos, bos_token_id=bos, pad_token_id=eos),
      vision_config=dict(hidden_size=vision_width, num_hidden_layers=vision_layers, num_attention_heads=vision_heads,
                         intermediate_size=2 * vision_width, image_size=image_size, patch_size=patch),
      projection_dim=projection)
  model = CLIPModel(config).eval()
  _randomise_norms(model, seed)
  return _save(model, tokenizer, directory)


def _randomise_norms(model, seed: int) -> None:
  """LayerNorms start at scale 1 and bias 0, and BERT's and CLIP's biases at 0: values that would
  hide a LayerNorm or bias mapped to the wrong place. Perturb every such parameter."""
  import torch

  generator = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for parameter in model.parameters():
      if parameter.ndim <= 1:
        parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))

