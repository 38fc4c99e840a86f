"""`ssljax bench import`: how long an import of a GPT-2-small-sized checkpoint takes, and how much
memory it holds at its peak, against the checkpoint's size.

The checkpoint is made here with numpy and safetensors (random weights in GPT-2's names and
shapes, and a byte-level BPE tokenizer of GPT-2's 50,257 tokens whose pieces are made up), so
the measurement needs no download and no PyTorch. The import runs in a child process, whose
peak resident memory (VmHWM, reset when the child starts: a forked child begins with its
parent's peak, and the parent has just written the checkpoint) is read when it ends; the same
child's memory just before the import (JAX and ssljax loaded) is reported beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)


def write_gpt2_checkpoint(directory: str, shape: dict = GPT2_SMALL, seed: int = 0) -> int:
  """A random GPT2LMHeadModel checkpoint of `shape` in `directory`; returns its weights' bytes."""
  from safetensors.numpy import save_file

  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  d, v, p = shape["n_embd"], shape["vocab_size"], shape["n_positions"]
  normal = lambda *s: (0.02 * rng.standard_normal(s, dtype=np.float32))  # noqa: E731
  tensors = {"transformer.wte.weight": normal(v, d), "transformer.wpe.weight": normal(p, d),
             "transformer.ln_f.weight": np.ones(d, np.float32), "transformer.ln_f.bias": np.zeros(d, np.float32)}
  for i in range(shape["n_layer"]):
    h = f"transformer.h.{i}."
    tensors.update({h + "ln_1.weight": np.ones(d, np.float32), h + "ln_1.bias": np.zeros(d, np.float32),
                    h + "attn.c_attn.weight": normal(d, 3 * d), h + "attn.c_attn.bias": np.zeros(3 * d, np.float32),
                    h + "attn.c_proj.weight": normal(d, d), h + "attn.c_proj.bias": np.zeros(d, np.float32),
                    h + "ln_2.weight": np.ones(d, np.float32), h + "ln_2.bias": np.zeros(d, np.float32),
                    h + "mlp.c_fc.weight": normal(d, 4 * d), h + "mlp.c_fc.bias": np.zeros(4 * d, np.float32),
                    h + "mlp.c_proj.weight": normal(4 * d, d), h + "mlp.c_proj.bias": np.zeros(d, np.float32)})
  save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "bos_token_id": v - 1, "eos_token_id": v - 1, **shape}
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  _write_tokenizer(directory, v)
  return sum(t.nbytes for t in tensors.values())


def _write_tokenizer(directory: str, vocab_size: int) -> None:
  """A byte-level BPE of `vocab_size` tokens: the 256 byte pieces, made-up longer pieces, and
  <|endoftext|> last (GPT-2's id layout)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers

  alphabet = pre_tokenizers.ByteLevel.alphabet()
  vocab = {piece: i for i, piece in enumerate(sorted(alphabet))}
  for i in range(vocab_size - 1 - len(vocab)):
    vocab[f"{alphabet[i % len(alphabet)]}{i}"] = len(vocab)
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<|endoftext|>"])
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f)


_CHILD = """
import json, resource, sys, time

def peak_kib():
  try:
    with open("/proc/self/status") as status:
      return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

try:
  # A forked child starts with its parent's peak (the parent wrote the checkpoint); Linux resets
  # it to the present resident size here.
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
except OSError:
  pass
from ssljax import convert
import jax.numpy as jnp
jnp.zeros(()).block_until_ready()  # the runtime started, as in any process that imports
before = peak_kib()
start = time.perf_counter()
convert.import_to_workdir(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_before_kib": before, "rss_peak_kib": peak_kib()}))
"""


def measure_import(directory: str, workdir: str) -> dict:
  """Seconds and memory of `import_to_workdir(directory, workdir)` in a child process."""
  done = subprocess.run([sys.executable, "-c", _CHILD, directory, workdir], capture_output=True, text=True,
                        check=False)
  if done.returncode:
    raise RuntimeError(f"the import failed: {done.stderr.strip().splitlines()[-1]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> str:
  """Writes the checkpoint, imports it, and returns one line of figures."""
  with tempfile.TemporaryDirectory() as scratch:
    source, workdir = os.path.join(scratch, "gpt2"), os.path.join(scratch, "run")
    start = time.perf_counter()
    size = write_gpt2_checkpoint(source)
    written = time.perf_counter() - start
    figures = measure_import(source, workdir)
  peak, before = figures["rss_peak_kib"] * 1024, figures["rss_before_kib"] * 1024
  return (f"GPT-2 small ({size / 2**20:.0f} MiB of float32 weights, written in {written:.1f} s): imported in "
          f"{figures['seconds']:.1f} s; peak memory {peak / 2**20:.0f} MiB = {peak / size:.2f}x the checkpoint "
          f"({before / 2**20:.0f} MiB before the import, {(peak - before) / size:.2f}x added by it); "
          f"{os.cpu_count()} CPU cores")
