"""Hugging Face checkpoints in and out (`ssljax import`, `ssljax export`, `ssljax.convert`).

Every model here is made by `transformers` itself with random weights (tests/hf_checkpoints.py:
two shapes per architecture, odd layer and head counts, vocabularies that are not multiples of
128, BERT's post-LN block, CLIP towers of different widths) and saved with `save_pretrained`;
the imported run must give `transformers`' outputs on the same inputs in float32, generate the
same greedy tokens, survive an export round trip bit for bit, and take sharded steps equal to
one device's.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_checkpoints  # noqa: E402
from helpers import run_cli, run_steps  # noqa: E402
from ssljax import convert, objectives  # noqa: E402
from ssljax import workdir as workdir_lib  # noqa: E402
from ssljax.commands import generate  # noqa: E402
from ssljax.families import image_text  # noqa: E402
from ssljax.convert.hf_files import ConversionError  # noqa: E402
from ssljax.train import defaults  # noqa: E402

RTOL = 1e-4  # relative to the largest magnitude of the compared output, float32 throughout

GPT2_SHAPES = {"3x3": dict(layers=3, heads=3, width=48, vocab=333),
               "2x4": dict(layers=2, heads=4, width=64, vocab=300, activation="gelu", seed=1)}
BERT_SHAPES = {"3x3": dict(layers=3, heads=3, width=48, vocab=333),
               "1x2": dict(layers=1, heads=2, width=32, vocab=257, seed=1)}
CLIP_SHAPES = {"text32-vision48": dict(),
               "text48-vision32": dict(text_layers=3, text_heads=3, text_width=48, vision_layers=1, vision_heads=2,
                                       vision_width=32, patch=16, image_size=48, vocab=301, projection=16, seed=1)}


def close(ours, theirs, what: str, rtol=RTOL):
  """|ours - theirs| <= rtol * max |theirs|, elementwise; prints the largest difference relative
  to that scale (the README's table: `pytest tests/test_convert.py -k equal_transformers -rP`)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  scale = np.max(np.abs(theirs))
  worst = np.max(np.abs(ours - theirs))
  print(f"{what}: largest difference {worst / scale:.2e} of the largest magnitude {scale:.3g}")
  assert worst <= rtol * scale, f"{what}: largest difference {worst:.3g} against a scale of {scale:.3g}"


def _checkpoint(tmp_path_factory, build, name, shapes):
  return build(str(tmp_path_factory.mktemp(name) / "hf"), **shapes)


@pytest.fixture(scope="module", params=sorted(GPT2_SHAPES))
def gpt2_dir(request, tmp_path_factory):
  return _checkpoint(tmp_path_factory, hf_checkpoints.gpt2, "gpt2", GPT2_SHAPES[request.param])


@pytest.fixture(scope="module")
def one_gpt2_dir(tmp_path_factory):
  """One GPT-2 checkpoint, for the checks that do not depend on the shape."""
  return _checkpoint(tmp_path_factory, hf_checkpoints.gpt2, "gpt2one", GPT2_SHAPES["3x3"])


@pytest.fixture(scope="module")
def one_bert_dir(tmp_path_factory):
  return _checkpoint(tmp_path_factory, hf_checkpoints.bert, "bertone", BERT_SHAPES["3x3"])


@pytest.fixture(scope="module", params=sorted(BERT_SHAPES))
def bert_dir(request, tmp_path_factory):
  return _checkpoint(tmp_path_factory, hf_checkpoints.bert, "bert", BERT_SHAPES[request.param])


@pytest.fixture(scope="module", params=sorted(CLIP_SHAPES))
def clip_dir(request, tmp_path_factory):
  return _checkpoint(tmp_path_factory, hf_checkpoints.clip, "clip", CLIP_SHAPES[request.param])


def _ordinary_ids(tokenizer, shape, seed=0):
  """Random ids of real, non-special tokens."""
  special = set(tokenizer.special_ids.values())
  ordinary = np.array([i for i in range(tokenizer.num_tokens) if i not in special])
  return ordinary[np.random.default_rng(seed).integers(0, len(ordinary), shape)]


# GPT-2 ----------------------------------------------------------------------------------------------

def test_gpt2_logits_and_hidden_states_equal_transformers(gpt2_dir):
  imported = convert.import_checkpoint(gpt2_dir)
  reference = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  objective = objectives.build(imported.config)
  model = objective.extras["model"]()
  tokens = _ordinary_ids(imported.tokenizer, (3, 21))
  with torch.no_grad():
    theirs = reference(torch.tensor(tokens), output_hidden_states=True)
  hidden = model.apply({"params": imported.params}, jnp.asarray(tokens))
  logits = np.asarray(model.apply({"params": imported.params}, hidden, jnp.float32, method="logits"))
  real = imported.tokenizer.num_tokens
  close(hidden, theirs.hidden_states[-1].numpy(), "GPT-2 final hidden states")
  close(logits[..., :real], theirs.logits.numpy(), "GPT-2 logits")
  # The rows that only pad the table to a multiple of 128 never win.
  assert logits.shape[-1] % 128 == 0 and np.all(logits[..., real:] <= -1e8)
  # Per-token log-probabilities (perplexity, few-shot scoring) are transformers' too.
  ours = np.asarray(objective.extras["log_probs"](imported.params, {}, jnp.asarray(tokens)))[:, 1:]
  log_softmax = torch.log_softmax(theirs.logits[:, :-1].double(), -1).numpy()
  close(ours, np.take_along_axis(log_softmax, tokens[:, 1:, None], -1)[..., 0], "GPT-2 token log-probabilities")


def test_gpt2_greedy_generation_equals_transformers_token_for_token(gpt2_dir, tmp_path):
  workdir = str(tmp_path / "run")
  imported = convert.import_to_workdir(gpt2_dir, workdir)
  reference = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
  prompts = ["The government said", "Shares in the bank rose after", "A"]
  new = 12
  texts = generate(workdir, prompts, greedy=True, max_new_tokens=new, temperature=0)
  eos = imported.tokenizer.special_id("eos")
  for prompt, (text,) in zip(prompts, texts):
    ids = imported.tokenizer.encode(prompt)
    with torch.no_grad():
      out = reference.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False, pad_token_id=eos,
                               attention_mask=torch.ones((1, len(ids)), dtype=torch.long))[0, len(ids):].tolist()
    out = out[:out.index(eos)] if eos in out else out  # ssljax stops before [EOS], transformers after it
    assert text == imported.tokenizer.decode(out), prompt
  # Token for token through the KV cache, the prompts batched at their different lengths.
  objective = objectives.build(imported.config)
  rows = [imported.tokenizer.encode(p) for p in prompts]
  ours = objective.extras["generate"](imported.params, {}, rows, max_new_tokens=new, key=jax.random.key(0),
                                      greedy=True)
  for ids, tokens in zip(rows, ours):
    with torch.no_grad():
      out = reference.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False, pad_token_id=eos,
                               attention_mask=torch.ones((1, len(ids)), dtype=torch.long))[0, len(ids):].tolist()
    assert list(tokens) == (out[:out.index(eos)] if eos in out else out)


# BERT -----------------------------------------------------------------------------------------------

def _bert_inputs(tokenizer, batch=3, length=19):
  """[CLS] A [SEP] B [SEP] rows with segments, the last row padded after 12 tokens."""
  ids = _ordinary_ids(tokenizer, (batch, length))
  ids[:, 0] = tokenizer.special_id("cls")
  ids[:, 8] = ids[:, -1] = tokenizer.special_id("sep")
  segments = (np.arange(length) > 8).astype(np.int32)[None].repeat(batch, 0)
  mask = np.ones_like(ids)
  ids[-1, 12:], segments[-1, 12:], mask[-1, 12:] = tokenizer.special_id("pad"), 0, 0
  ids[-1, 11] = tokenizer.special_id("sep")
  return ids, segments, mask


def test_bert_hidden_states_masked_lm_and_next_sentence_logits_equal_transformers(bert_dir):
  imported = convert.import_checkpoint(bert_dir)
  assert imported.config.model.norm_position == "post" and not imported.notes
  reference = transformers.BertForPreTraining.from_pretrained(bert_dir).eval()
  objective = objectives.build(imported.config)
  ids, segments, mask = _bert_inputs(imported.tokenizer)
  with torch.no_grad():
    theirs = reference(torch.tensor(ids), token_type_ids=torch.tensor(segments), attention_mask=torch.tensor(mask),
                       output_hidden_states=True)
  real = mask.astype(bool)
  net = objective.extras["pretraining_model"]()
  hidden = np.asarray(net.apply({"params": imported.params}, jnp.asarray(ids), jnp.asarray(segments),
                                method="encode"))
  close(hidden[real], theirs.hidden_states[-1].numpy()[real], "BERT final hidden states")
  positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
  mlm = np.asarray(objective.extras["mlm_logits"](imported.params, jnp.asarray(ids), jnp.asarray(segments),
                                                  jnp.asarray(positions)))
  vocab = imported.tokenizer.num_tokens
  close(mlm[..., :vocab][real], theirs.prediction_logits.numpy()[real], "BERT masked-LM logits")
  assert np.all(mlm[..., vocab:] <= -1e8)
  pooled = objective.features(imported.params, {}, {"tokens": jnp.asarray(ids), "segments": jnp.asarray(segments)})
  with torch.no_grad():
    their_pooled = reference.bert(torch.tensor(ids), token_type_ids=torch.tensor(segments),
                                  attention_mask=torch.tensor(mask)).pooler_output.numpy()
  close(pooled, their_pooled, "BERT pooled output")
  # ssljax's class 1 is "B follows A", transformers' class 0.
  nsp = np.asarray(objective.extras["nsp_logits"](imported.params, jnp.asarray(ids), jnp.asarray(segments)))
  close(nsp[:, ::-1], theirs.seq_relationship_logits.numpy(), "BERT next-sentence logits")


@pytest.mark.parametrize("architecture,missing", [("BertModel", "mlm and nsp"), ("BertForMaskedLM", "pooler and nsp")])
def test_bert_without_heads_imports_the_encoder_and_says_which_heads_are_new(architecture, missing, tmp_path):
  directory = hf_checkpoints.bert(str(tmp_path / "hf"), architecture=architecture)
  imported = convert.import_checkpoint(directory)
  assert imported.notes == [f"the checkpoint has no {missing} head: initialised afresh (seed 0)"]
  reference = transformers.BertModel.from_pretrained(directory).eval()
  ids, segments, mask = _bert_inputs(imported.tokenizer)
  with torch.no_grad():
    theirs = reference(torch.tensor(ids), token_type_ids=torch.tensor(segments), attention_mask=torch.tensor(mask))
  net = objectives.build(imported.config).extras["pretraining_model"]()
  hidden = np.asarray(net.apply({"params": imported.params}, jnp.asarray(ids), jnp.asarray(segments),
                                method="encode"))
  close(hidden[mask.astype(bool)], theirs.last_hidden_state.numpy()[mask.astype(bool)], f"{architecture} hidden states")


# CLIP -----------------------------------------------------------------------------------------------

def test_clip_embeddings_and_logit_scale_equal_transformers(clip_dir):
  imported = convert.import_checkpoint(clip_dir)
  reference = transformers.CLIPModel.from_pretrained(clip_dir).eval()
  objective = objectives.build(imported.config)
  size, seq_len = imported.config.data.image_size, imported.config.text.seq_len
  images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
  captions = ["a red circle", "the square", "Shapes."]  # each shorter than the context
  # ssljax's captions are what transformers' tokenizer makes of them: <|startoftext|> ... <|endoftext|>.
  tokens = image_text.tokenize(imported.tokenizer, captions, seq_len)
  their_tokenizer = transformers.AutoTokenizer.from_pretrained(clip_dir)
  for row, caption in zip(tokens, captions):
    ids = their_tokenizer(caption)["input_ids"]
    assert row[:len(ids)].tolist() == ids and set(row[len(ids):]) <= {imported.tokenizer.special_id("pad")}
  mean, std = (np.asarray(imported.config.model[k], np.float32) for k in ("vit_pixel_mean", "vit_pixel_std"))
  pixels = ((images / np.float32(255) - mean) / std).transpose(0, 3, 1, 2)  # transformers' preprocessing, NCHW
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(tokens), pixel_values=torch.tensor(pixels))
  close(objective.extras["embed_image"](imported.params, {}, jnp.asarray(images)), theirs.image_embeds.numpy(),
        "CLIP image embeddings")
  close(objective.extras["embed_text"](imported.params, {}, jnp.asarray(tokens)), theirs.text_embeds.numpy(),
        "CLIP text embeddings")
  close(objective.extras["logit_scale"](imported.params), reference.logit_scale.exp().item(), "CLIP logit scale")
  with torch.no_grad():  # the image tower's feature before the projection: the class token's post-LayerNorm
    their_features = reference.vision_model(pixel_values=torch.tensor(pixels)).pooler_output.numpy()
  close(objective.features(imported.params, {}, {"image": jnp.asarray(images)}), their_features,
        "CLIP image features")


# A run in every sense ---------------------------------------------------------------------------------

def _smoke_base(objective: str):
  """The objective's smoke config (a few small steps and evaluations) as the imported run's base."""
  config = defaults.load_config(f"{objective}:smoke")
  config.train.steps, config.train.checkpoint_every, config.train.evaluate = 2, 2, False
  return config


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, data_dir):
  """GPT-2 (3 layers) imported on the gpt smoke config and trained 2 steps further."""
  os.environ["SSLJAX_DATA_DIR"] = data_dir
  directory = hf_checkpoints.gpt2(str(tmp_path_factory.mktemp("gpt2run") / "hf"), **GPT2_SHAPES["3x3"])
  workdir = str(tmp_path_factory.mktemp("gpt2run") / "run")
  imported = convert.import_to_workdir(directory, workdir, base_config=_smoke_base("gpt"))
  return directory, workdir, imported


@pytest.mark.slow  # ~20 s
def test_imported_run_records_its_source_and_resumes_into_further_training(gpt2_run):
  from ssljax.train import loop

  directory, workdir, imported = gpt2_run
  saved = workdir_lib.load_config(workdir)
  assert saved.imported_from == f"huggingface GPT2LMHeadModel {os.path.abspath(directory)}"
  assert saved.text.tokenizer == "huggingface" and saved.model.max_len == 64
  start = workdir_lib.restore_params(workdir)
  jax.tree.map(np.testing.assert_array_equal, start, imported.params)  # step 0 is the checkpoint's weights
  state = loop.train(saved, workdir, progress=False)  # resumes the import's step 0
  assert int(state.step) == 2
  losses = [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert len(losses) == 2 and all(np.isfinite(losses))
  moved = workdir_lib.restore_params(workdir)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(start)))


def test_export_round_trip_gives_transformers_ssljax_outputs_and_the_same_parameters(gpt2_run, tmp_path):
  _, workdir, imported = gpt2_run
  out = str(tmp_path / "exported")
  written = convert.export_workdir(workdir, out)
  assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(written)
  reference = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
  config = workdir_lib.load_config(workdir)
  objective, params, _ = objectives.restore_model(workdir, config)
  model = objective.extras["model"]()
  tokens = _ordinary_ids(imported.tokenizer, (2, 17))
  logits = model.apply({"params": params}, model.apply({"params": params}, jnp.asarray(tokens)), jnp.float32,
                       method="logits")
  with torch.no_grad():
    theirs = reference(torch.tensor(tokens)).logits.numpy()
  close(np.asarray(logits)[..., :imported.tokenizer.num_tokens], theirs, "exported GPT-2 logits")
  again = convert.import_checkpoint(out, base_config=config)
  jax.tree.map(np.testing.assert_array_equal, again.params, jax.tree.map(np.asarray, params))
  their_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  text = "Shares in the bank rose 5% on Monday."
  assert their_tokenizer(text)["input_ids"] == imported.tokenizer.encode(text)


def _assert_export_round_trip(directory, cls, tmp_path):
  workdir, out = str(tmp_path / "run"), str(tmp_path / "exported")
  imported = convert.import_to_workdir(directory, workdir)
  convert.export_workdir(workdir, out)
  again = convert.import_checkpoint(out)
  jax.tree.map(np.testing.assert_array_equal, again.params, imported.params)
  first, second = cls.from_pretrained(directory).state_dict(), cls.from_pretrained(out).state_dict()
  assert first.keys() == second.keys()
  for name in first:
    np.testing.assert_array_equal(first[name].numpy(), second[name].numpy(), err_msg=name)


def test_bert_export_round_trip(bert_dir, tmp_path):
  _assert_export_round_trip(bert_dir, transformers.BertForPreTraining, tmp_path)


def test_clip_export_round_trip(clip_dir, tmp_path):
  _assert_export_round_trip(clip_dir, transformers.CLIPModel, tmp_path)


def test_export_names_the_options_without_a_counterpart(tmp_path, data_dir):
  config = defaults.load_config("gpt:smoke")  # Primer's convolution (the byte tokenizer exports)
  config.model.relative_buckets = 0
  problems = convert.export_problems(config)
  assert any("model.qkv_conv_width=3" in p for p in problems) and not any("text.tokenizer" in p for p in problems)
  bert_config = defaults.load_config("bert")
  assert any("model.norm_position='pre'" in p for p in convert.export_problems(bert_config))
  assert any("model.relative_buckets=32" in p for p in convert.export_problems(bert_config))


# Sharded steps ---------------------------------------------------------------------------------------

def _assert_same_steps(objective, params, batch):
  # SGD: the update is linear in the gradient, so the devices' float rounding stays at its own size
  # (Adam's first steps are about lr * sign(g), which turns a rounding of a near-zero gradient into lr).
  tx = optax.sgd(0.1, momentum=0.9)
  one, one_history = run_steps(objective, batch, 1, tx, params=params)
  eight, eight_history = run_steps(objective, batch, 8, tx, params=params)
  np.testing.assert_allclose([h["loss"] for h in eight_history], [h["loss"] for h in one_history], rtol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), eight.params, one.params)


def test_imported_gpt2_trained_further_on_eight_devices_equals_one(one_gpt2_dir):
  imported = convert.import_checkpoint(one_gpt2_dir)
  objective = objectives.build(imported.config)
  tokens = _ordinary_ids(imported.tokenizer, (8, 24))
  tokens[:, 10] = imported.tokenizer.special_id("eos")
  _assert_same_steps(objective, imported.params, {"tokens": jnp.asarray(tokens, jnp.int32)})


@pytest.mark.slow  # 8 == 1 of the fine-tuning step is in test_finetune_objective: ~20 s
def test_imported_bert_fine_tuned_on_eight_devices_equals_one(one_bert_dir, tmp_path, data_dir):
  os.environ["SSLJAX_DATA_DIR"] = data_dir
  workdir = str(tmp_path / "bert")
  imported = convert.import_to_workdir(one_bert_dir, workdir)
  config = defaults.load_config("finetune:bbc_topic")
  config.init_from = workdir
  config.seq_len, config.max_train_examples, config.max_eval_examples = 32, 48, 16
  config.batch_size, config.dropout = 8, 0.1
  objective = objectives.build(config)
  inp = objective.family.train_input(config, "")
  from ssljax import data

  batch = data.example_batch(inp.source, inp.record_fn, n=8)
  fresh = jax.jit(objective.init)(jax.random.key(0), batch)[0]
  params = objective.load_pretrained(fresh, jax.tree.map(jnp.asarray, imported.params))
  np.testing.assert_array_equal(params["encoder"]["token_embed"]["embedding"],
                                imported.params["encoder"]["token_embed"]["embedding"])
  _assert_same_steps(objective, params, batch)


# Bad input: one line naming the problem, nothing written ---------------------------------------------

def _fails_cleanly(directory, workdir, match):
  with pytest.raises(ConversionError, match=match) as error:
    convert.import_to_workdir(directory, workdir)
  assert "\n" not in str(error.value)
  return error


def test_bad_checkpoints_are_refused_by_name_and_write_nothing(one_gpt2_dir, tmp_path):
  import shutil

  workdir = str(tmp_path / "run")
  empty = tmp_path / "empty"
  empty.mkdir()
  _fails_cleanly(str(empty), workdir, "has no config.json")
  _fails_cleanly(str(tmp_path / "absent"), workdir, "is not a directory")

  def variant(name, edit_config=None, edit_files=None):
    copy = str(tmp_path / name)
    shutil.copytree(one_gpt2_dir, copy)
    if edit_config:
      path = os.path.join(copy, "config.json")
      record = json.load(open(path))
      edit_config(record)
      json.dump(record, open(path, "w"))
    if edit_files:
      edit_files(copy)
    return copy

  _fails_cleanly(variant("arch", lambda c: c.update(architectures=["LlamaForCausalLM"])), workdir,
                 r"architectures field is \['LlamaForCausalLM'\]")
  _fails_cleanly(variant("act", lambda c: c.update(activation_function="swish")), workdir, "activation")
  _fails_cleanly(variant("scale", lambda c: c.update(scale_attn_by_inverse_layer_idx=True)), workdir,
                 "scale_attn_by_inverse_layer_idx")
  _fails_cleanly(variant("shape", lambda c: c.update(n_embd=c["n_embd"] + 3, n_head=1)), workdir, "has shape")

  def drop_tensor(directory):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, path, metadata={"format": "pt"})

  _fails_cleanly(variant("missing", edit_files=drop_tensor), workdir, "no tensor 'transformer.h.1.mlp.c_fc.weight'")

  def truncate(directory):
    path = os.path.join(directory, "model.safetensors")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)

  _fails_cleanly(variant("truncated", edit_files=truncate), workdir, "truncated")
  _fails_cleanly(variant("notok", edit_files=lambda d: os.remove(os.path.join(d, "tokenizer.json"))), workdir,
                 "has no tokenizer.json")
  assert not os.path.exists(workdir) and not os.path.exists(workdir + ".importing")


def test_an_existing_run_is_not_overwritten(one_gpt2_dir, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  _fails_cleanly(one_gpt2_dir, str(workdir), "already holds files")
  assert os.listdir(workdir) == ["config.json"] and (workdir / "config.json").read_text() == "{}"


def test_the_command_line_imports_and_reports_errors_in_one_line(one_gpt2_dir, tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  done = run_cli(["import", one_gpt2_dir, "--workdir", workdir, "--config", "configs/gpt.py:smoke"], data_dir)
  assert done.returncode == 0, done.stderr
  assert "imported huggingface GPT2LMHeadModel" in done.stdout
  again = run_cli(["import", one_gpt2_dir, "--workdir", workdir], data_dir)
  assert again.returncode != 0 and "Traceback" not in again.stderr
  assert again.stderr.strip().splitlines()[-1].startswith("ssljax: --workdir") and "already holds files" in again.stderr
  out = str(tmp_path / "exported")
  exported = run_cli(["export", "--workdir", workdir, "--format", "hf", out], data_dir)
  assert exported.returncode == 0, exported.stderr
  assert os.path.exists(os.path.join(out, "model.safetensors"))


# The commands on imported runs -------------------------------------------------------------------------

@pytest.mark.slow  # ~20 s
def test_eval_of_an_imported_gpt2_reports_its_evaluators(gpt2_run):
  from ssljax.commands import evaluate_workdir

  _, workdir, _ = gpt2_run
  evaluate_workdir(workdir)
  report = json.load(open(os.path.join(workdir, "eval.json")))
  assert report["objective"] == "gpt" and {"language_model", "samples", "few_shot"} <= set(report)
  assert np.isfinite(report["language_model"]["model"]["loss_per_token"])


@pytest.mark.slow  # init_from is tested in test_finetune_objective; the import in this file: ~20 s
def test_fine_tuning_starts_from_an_imported_bert(one_bert_dir, tmp_path, data_dir):
  from ssljax.train import loop

  os.environ["SSLJAX_DATA_DIR"] = data_dir
  bert_run = str(tmp_path / "bert")
  imported = convert.import_to_workdir(one_bert_dir, bert_run)
  config = defaults.load_config("finetune:bbc_topic")
  config.init_from, config.train.steps, config.train.checkpoint_every = bert_run, 2, 2
  config.seq_len, config.max_train_examples, config.max_eval_examples = 32, 48, 16
  config.batch_size = config.train.batch_size = 8
  workdir = str(tmp_path / "finetune")
  loop.train(config, workdir, progress=False)
  params = workdir_lib.restore_params(workdir)
  assert params["encoder"]["token_embed"]["embedding"].shape == imported.params["encoder"]["token_embed"][
      "embedding"].shape
  # The pretrained encoder was the start: two small steps leave it close to the import, far from a fresh one.
  moved = np.abs(np.asarray(params["encoder"]["blocks_0"]["mlp"]["fc_in"]["kernel"])
                 - imported.params["encoder"]["blocks_0"]["mlp"]["fc_in"]["kernel"]).max()
  assert moved < 0.05


def test_zero_shot_classifies_with_an_imported_clip(clip_dir, tmp_path):
  from ssljax.commands import zero_shot

  workdir = str(tmp_path / "clip")
  imported = convert.import_to_workdir(clip_dir, workdir)
  size = imported.config.data.image_size
  images = list(np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8))
  labels = ["red circle", "blue square", "green triangle"]
  probs = zero_shot.classify(workdir, images, labels, template="a {}")
  # The probabilities are the imported model's: softmax(scale * cos) from transformers' embeddings.
  reference = transformers.CLIPModel.from_pretrained(clip_dir).eval()
  their_tokenizer = transformers.AutoTokenizer.from_pretrained(clip_dir)
  mean, std = (np.asarray(imported.config.model[k], np.float32) for k in ("vit_pixel_mean", "vit_pixel_std"))
  pixels = ((np.stack(images) / np.float32(255) - mean) / std).transpose(0, 3, 1, 2)
  inputs = their_tokenizer([f"a {label}" for label in labels], padding=True, return_tensors="pt")
  with torch.no_grad():
    theirs = reference(pixel_values=torch.tensor(pixels), **inputs).logits_per_image.softmax(-1).numpy()
  close(np.asarray(probs), theirs, "CLIP zero-shot probabilities")


def test_older_tensor_names_import_the_same_parameters(one_gpt2_dir, one_bert_dir, tmp_path):
  """OpenAI's GPT-2 upload has no "transformer." prefix and keeps the causal-mask buffers; the
  original BERT checkpoints name LayerNorms gamma and beta. Either imports as the current names."""
  import shutil

  from safetensors.numpy import load_file, save_file

  def renamed(source, name, rename, extra=None):
    copy = str(tmp_path / name)
    shutil.copytree(source, copy)
    path = os.path.join(copy, "model.safetensors")
    tensors = {rename(k): v for k, v in load_file(path).items()}
    tensors.update(extra or {})
    save_file(tensors, path, metadata={"format": "pt"})
    return copy

  mask = np.tril(np.ones((1, 1, 64, 64), np.float32))
  gpt2 = renamed(one_gpt2_dir, "gpt2", lambda k: k.removeprefix("transformer."),
                 {f"h.{i}.attn.bias": mask for i in range(3)})
  bert = renamed(one_bert_dir, "bert", lambda k: k.replace("LayerNorm.weight", "LayerNorm.gamma")
                 .replace("LayerNorm.bias", "LayerNorm.beta"))
  for old, new in ((gpt2, one_gpt2_dir), (bert, one_bert_dir)):
    jax.tree.map(np.testing.assert_array_equal, convert.import_checkpoint(old).params,
                 convert.import_checkpoint(new).params)
