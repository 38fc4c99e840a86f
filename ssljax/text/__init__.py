"""Text for language-model pretraining: tokenizers, document packing and BERT's sentence pairs.

Tokenizers (`ByteTokenizer`, `SentencePieceTokenizer`, and `HuggingFaceTokenizer` for an
imported tokenizer.json) name their special tokens by role (`Tokenizer.special_ids`: pad, eos,
cls, sep, mask, unk, bos); the bundled two share the ids PAD=0, EOS=1, CLS=2, SEP=3, MASK=4,
UNK=5 and reproduce text exactly, and `to_huggingface` writes them as Hugging Face tokenizers
that give the same ids. They are saved next to a run and checked by fingerprint when it is
restored. Packing
turns tokenized documents into fixed-length [EOS]-separated windows, in numpy
(`pack`) or as a checkpointable grain stage (`packed_dataset`); `pairs` builds
BERT's `[CLS] A [SEP] B [SEP]` examples with next-sentence labels, also as a
checkpointable grain stage. This package needs only numpy, grain,
sentencepiece and tokenizers (not JAX), so input pipelines can use it in worker processes;
the one exception, BERT's on-device masking, is the `ssljax.text.masking`
module, which is not imported here.
"""

from __future__ import annotations

from ssljax.text.hf_export import to_huggingface
from ssljax.text.packing import (
    PackedIterDataset,
    TokenizeDocument,
    pack,
    packed_dataset,
    tokenize_documents,
)
from ssljax.text.pairs import Documents, PairIterDataset, TokenizeSentences, split_sentences
from ssljax.text.tokenizer import (
    CLS,
    EOS,
    MASK,
    PAD,
    ROLES,
    SEP,
    SPECIAL_TOKENS,
    UNK,
    ByteTokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    check_same,
    from_config,
    padded_vocab_size,
)
from ssljax.text.tokenizer import load as load_tokenizer

__all__ = [
    "CLS",
    "EOS",
    "MASK",
    "PAD",
    "ROLES",
    "SEP",
    "SPECIAL_TOKENS",
    "UNK",
    "ByteTokenizer",
    "Documents",
    "HuggingFaceTokenizer",
    "PackedIterDataset",
    "PairIterDataset",
    "SentencePieceTokenizer",
    "TokenizeDocument",
    "TokenizeSentences",
    "Tokenizer",
    "check_same",
    "from_config",
    "load_tokenizer",
    "pack",
    "packed_dataset",
    "padded_vocab_size",
    "split_sentences",
    "to_huggingface",
    "tokenize_documents",
]
