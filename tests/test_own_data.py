"""A user's own data: `image_folder`, `text_files` and the fine-tuning `file` task, on small files
the tests write (PNG and JPEG images drawn with numpy, .txt and .jsonl documents, a CSV).

The splits are checked against the rule docs/data.md states (SHA-256 of the relative path,
80 / 10 / 10), decoded images against Pillow's own resize of the same file, and every format
through the CLI: `ssljax train` (and `ssljax eval` for images), `ssljax finetune --task file`."""

import csv
import hashlib
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest
from helpers import REPO, run_cli
from PIL import Image

from ssljax import data
from ssljax.data import file_splits, image_folder, text_files
from ssljax.downstream import file_task, tasks
from ssljax.train import checks
from ssljax.train.defaults import load_config

CLASSES = ("circle", "square", "triangle")  # written unsorted below, so the ids must come from sorting


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def expected_split(key: str) -> str:
  """docs/data.md's rule, by hand: the first 8 bytes of SHA-256, big-endian, over 2**64."""
  u = int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 2**64
  return "train" if u < 0.8 else "validation" if u < 0.9 else "test"


def _draw(rng, mode: str, size: tuple[int, int]) -> Image.Image:
  height, width = size
  channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
  pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
  return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def write_images(root, count_per_class=(14, 12, 10), seed=0, labelled=True) -> list[str]:
  """Images of assorted sizes, modes and formats under `root`; returns their relative paths."""
  rng = np.random.default_rng(seed)
  written = []
  for class_name, count in zip(("triangle", "circle", "square"), count_per_class):
    folder = os.path.join(root, class_name) if labelled else root
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
      mode = ("RGB", "L", "RGBA")[i % 3]
      ext = ".jpg" if mode == "RGB" and i % 2 else ".png"
      name = f"{class_name}_{i}{ext}"
      _draw(rng, mode, tuple(rng.integers(9, 40, 2))).save(os.path.join(folder, name))
      written.append(f"{class_name}/{name}" if labelled else name)
  return written


def image_config(path, image_size=12, channels=None) -> ml_collections.ConfigDict:
  c = load_config("simclr:smoke")
  with c.unlocked():
    c.data.name, c.data.image_size, c.data.channels = "image_folder", image_size, channels
    c.data.path = None if path is None else str(path)
  return c


def pil_reference(path: str, size: int, mode: str) -> np.ndarray:
  """Pillow alone: convert, scale the shorter side to `size` (bicubic), crop the centre."""
  image = Image.open(path).convert(mode)
  width, height = image.size
  scale = size / min(width, height)
  new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
  left, top = (new_w - size) // 2, (new_h - size) // 2
  cropped = image.resize((new_w, new_h), Image.BICUBIC).crop((left, top, left + size, top + size))
  return np.asarray(cropped).reshape(size, size, -1)


@pytest.fixture(scope="module")
def labelled_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  return str(root), write_images(str(root))


# --- image_folder --------------------------------------------------------------------------------


def test_carved_split_is_the_documented_hash_and_fractions():
  keys = [f"folder/image_{i}.png" for i in range(3000)]
  assert [file_splits.carved_split(k) for k in keys] == [expected_split(k) for k in keys]
  counts = {s: sum(expected_split(k) == s for k in keys) / len(keys) for s in file_splits.SPLITS}
  assert abs(counts["train"] - 0.8) < 0.03 and abs(counts["validation"] - 0.1) < 0.02


def test_image_folder_classes_labels_and_carved_splits(labelled_root):
  root, written = labelled_root
  config = image_config(root)
  info = data.dataset_info(config.data)
  assert info.label_names == tuple(sorted(CLASSES)) and info.num_classes == 3
  seen = []
  for split in file_splits.SPLITS:
    source = data.open_split(config.data, split)
    assert sorted(source.files) == sorted(f for f in written if expected_split(f) == split)
    assert len(source) == info.num_examples[split] == len(source.files)
    for i, record in enumerate(source.__getitems__(range(len(source)))):
      assert record["label"] == sorted(CLASSES).index(source.files[i].split("/")[0])
    seen += source.files
  assert sorted(seen) == sorted(written)  # every image in exactly one split


def test_decoded_images_match_pillows_own_resize(labelled_root):
  root, _ = labelled_root
  for channels, mode in ((None, "RGB"), (1, "L")):
    config = image_config(root, image_size=12, channels=channels)
    source = data.open_split(config.data, "train")
    assert {os.path.splitext(f)[1] for f in source.files} == {".png", ".jpg"}  # RGB, L and RGBA PNGs, RGB JPEGs
    for i in range(len(source)):
      example = data.image_example(source[i], config.data.image_size)
      reference = pil_reference(os.path.join(root, source.files[i]), 12, mode)
      assert example["image"].dtype == np.uint8 and example["image"].shape == (12, 12, 3 if mode == "RGB" else 1)
      np.testing.assert_array_equal(example["image"], reference)
      assert example["label"].dtype == np.int32


def test_adding_images_moves_no_other_image(labelled_root, tmp_path):
  root, _ = labelled_root
  grown = str(tmp_path / "grown")
  shutil.copytree(root, grown)
  added = write_images(os.path.join(grown, "extra"), count_per_class=(0, 5, 0), seed=1)
  os.rename(os.path.join(grown, "extra", "circle"), os.path.join(grown, "circle", "more"))

  def split_of_each(path):
    config = image_config(path)
    return {f: s for s in file_splits.SPLITS for f in data.open_split(config.data, s).files}

  before, after = split_of_each(root), split_of_each(grown)
  assert len(after) == len(before) + len(added)
  assert all(after[f] == s for f, s in before.items())


def test_split_folders_and_a_validation_split_carved_from_train(tmp_path):
  train = write_images(str(tmp_path / "train"), count_per_class=(10, 10, 10))
  test = write_images(str(tmp_path / "test"), count_per_class=(2, 2, 2), seed=1)
  config = image_config(tmp_path)
  files = {s: data.open_split(config.data, s).files for s in file_splits.SPLITS}
  assert sorted(files["test"]) == sorted(f"test/{f}" for f in test)
  # validation/ is missing: the train/ images whose hash falls in validation's share form it.
  assert sorted(files["validation"]) == sorted(f"train/{f}" for f in train if expected_split(f"train/{f}") == "validation")
  assert sorted(files["train"] + files["validation"]) == sorted(f"train/{f}" for f in train)
  assert data.dataset_info(config.data).label_names == tuple(sorted(CLASSES))


def test_unlabelled_images_have_no_label_and_evaluation_says_so(tmp_path):
  written = write_images(str(tmp_path), labelled=False)
  config = image_config(tmp_path)
  source = data.open_split(config.data, "train")
  assert set(source[0]) == {"image"} and "label" not in data.image_example(source[0], 12)
  assert sum(len(data.open_split(config.data, s)) for s in file_splits.SPLITS) == len(written)
  assert data.dataset_info(config.data).num_classes is None
  from ssljax.families import image

  with pytest.raises(data.NoLabelsError, match="class folders"):
    image.train_input(config, str(tmp_path / "run"))  # the smoke config evaluates at the end


def test_image_folder_errors_name_the_path_and_the_fix(tmp_path, labelled_root):
  root, _ = labelled_root
  with pytest.raises(checks.ConfigError, match="is not a directory"):
    checks.check(image_config(tmp_path / "missing"), device_count=1)
  with pytest.raises(checks.ConfigError, match="image_size is not set"):
    checks.check(image_config(root, image_size=None), device_count=1)
  with pytest.raises(checks.ConfigError, match="channels must be 1"):
    checks.check(image_config(root, channels=4), device_count=1)
  config = load_config("simclr:smoke")
  with config.unlocked():
    config.data.path = root  # a TFDS dataset would silently ignore it
  with pytest.raises(checks.ConfigError, match="data.path.*read only for your own files"):
    checks.check(config, device_count=1)
  with pytest.raises(ValueError, match="--config.data.path"):
    data.open_split(image_config(None).data, "train")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("no images here")
  with pytest.raises(FileNotFoundError, match="no image files under .*empty"):
    data.open_split(image_config(tmp_path / "empty").data, "train")
  mixed = tmp_path / "mixed"
  write_images(str(mixed), count_per_class=(3, 0, 0))
  _draw(np.random.default_rng(0), "RGB", (9, 9)).save(mixed / "loose.png")
  with pytest.raises(ValueError, match="both in class folders and directly.*loose.png"):
    data.open_split(image_config(mixed).data, "train")
  with pytest.raises(file_splits.SplitNameError, match="train\\[:10%\\]"):
    data.open_split(image_config(root).data, "train[:10%]")
  broken = tmp_path / "broken" / "cat"
  broken.mkdir(parents=True)
  (broken / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  source = image_folder.ImageFolderSource(str(tmp_path / "broken"), ["cat/truncated.png"], [0], channels=3)
  with pytest.raises(data.UnreadableImageError, match="truncated.png cannot be decoded.*replace it"):
    source[0]
  # Read by grain's threads during training, it arrives as itself (the CLI reports it in one line).
  iterator = data.train_iterator(source, batch_size=1, seed=0, shard_index=0, shard_count=1)
  with pytest.raises(data.UnreadableImageError, match="truncated.png"):
    next(iterator)


# --- text_files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """12 .txt documents and a .jsonl file of 30 (one blank line between them); returns the root
  and {split key: text}."""
  root = tmp_path_factory.mktemp("corpus")
  documents = {}
  for i in range(12):
    text = f"Document {i}. It has two sentences about topic {i % 4}."
    (root / f"doc_{i:02d}.txt").write_text(text, encoding="utf-8")
    documents[f"doc_{i:02d}.txt"] = text
  lines = []
  for i in range(30):
    text = f"Line {i} of the jsonl file. Ünïcode is kept; the second sentence ends here."
    lines.append(json.dumps({"id": i, "body": text}))
    documents[f"news.jsonl#{i + 1 + (i >= 10)}"] = text  # a blank line follows the 10th
  lines.insert(10, "")
  (root / "news.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
  return root, documents


def text_config(path, objective="gpt", text_key="body") -> ml_collections.ConfigDict:
  c = load_config(f"{objective}:smoke")
  with c.unlocked():
    c.data.name, c.data.text_key = "text_files", text_key
    c.data.path = None if path is None else str(path)
  return c


def test_text_files_documents_and_splits(corpus):
  root, documents = corpus
  config = text_config(os.path.join(root, "*"))
  by_split = {}
  for split in file_splits.SPLITS:
    source = data.open_split(config.data, split)
    by_split[split] = sorted(r["body"] for r in source.__getitems__(range(len(source))))
    assert by_split[split] == sorted(t for k, t in documents.items() if expected_split(k) == split)
  assert sorted(t for texts in by_split.values() for t in texts) == sorted(documents.values())  # 42 documents, each once
  info = data.dataset_info(config.data)
  assert sum(info.num_examples.values()) == 42 and info.num_classes is None
  # A glob of one kind, a directory, and one file name the expected documents too.
  assert len(data.open_split(text_config(os.path.join(root, "*.txt")).data, "train")) == sum(
      expected_split(k) == "train" for k in documents if k.endswith(".txt"))
  assert sum(len(data.open_split(text_config(root).data, s)) for s in file_splits.SPLITS) == 42


def test_tokenizer_and_families_read_the_training_documents(corpus):
  from ssljax.evaluators import few_shot
  from ssljax.families import text

  root, documents = corpus
  config = text_config(os.path.join(root, "**", "*.jsonl"))
  with config.unlocked():
    config.text.icl_documents = 0
  train = sorted(t for k, t in documents.items() if k.startswith("news") and expected_split(k) == "train")
  assert sorted(text.tokenizer_texts(config)) == train
  training = text.training_documents(config)
  assert sorted(training[i]["body"] for i in range(len(training))) == train
  assert "topic" not in few_shot.tasks(config, "test")  # own text has no topics to prompt for


def test_text_files_errors(corpus, tmp_path):
  root, _ = corpus
  with pytest.raises(ValueError, match=r"news.jsonl, line 1 has no field 'text'.*\['body', 'id'\].*text_key"):
    data.open_split(text_config(os.path.join(root, "*.jsonl"), text_key="text").data, "train")
  with pytest.raises(FileNotFoundError, match="matches no .txt or .jsonl file"):
    data.open_split(text_config(os.path.join(tmp_path, "*.txt")).data, "train")
  (tmp_path / "table.csv").write_text("a,b\n")
  with pytest.raises(ValueError, match="table.csv, which is neither .txt nor .jsonl"):
    data.open_split(text_config(os.path.join(tmp_path, "*")).data, "train")
  (tmp_path / "bad.jsonl").write_text('{"body": "fine"}\nnot json\n')
  source = text_files.load(str(tmp_path / "bad.jsonl"), expected_split("bad.jsonl#2"), text_key="body")
  with pytest.raises(ValueError, match="bad.jsonl, line 2 is not a JSON object"):
    source.__getitems__(range(len(source)))
  with pytest.raises(checks.ConfigError, match="--config.data.path"):
    checks.check(text_config(None), device_count=1)


# --- the file fine-tuning task -----------------------------------------------------------------------


def write_csv(path, rows, header=("review", "other", "stars")):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def review_rows(count, seed=0):
  words = {"pos": ("good", "great", "lovely"), "neg": ("bad", "dull", "awful"), "mixed": ("odd", "uneven", "so-so")}
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(count):
    label = ("pos", "neg", "mixed")[i % 3]
    rows.append((f"a {words[label][rng.integers(3)]} film, number {i}", f"note {i}", label))
  return rows


def finetune_config(**keys) -> ml_collections.ConfigDict:
  from ssljax import finetune

  return finetune.with_overrides(finetune.default_config("file"), keys)


def test_file_task_labels_kinds_and_roles(tmp_path):
  rows = review_rows(90)
  write_csv(tmp_path / "reviews.csv", rows)
  config = finetune_config(data_path=str(tmp_path / "reviews.csv"), text_field="review", label_field="stars")
  task = tasks.for_config(config)
  assert task.kind == "classify" and task.labels == ("mixed", "neg", "pos")
  read = {role: task.read(config, role) for role in tasks.ROLES}
  for role, examples in read.items():
    expected = [r for r in rows if file_splits.carved_split(r[0]) == role]
    assert [(e["text"], task.labels[e["label"]]) for e in examples] == [(r[0], r[2]) for r in expected]
  # A second text column makes pairs; separate validation and test files are read whole.
  (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps({"review": r[0], "other": r[1], "stars": r[2]})
                                                for r in review_rows(6, seed=1)))
  write_csv(tmp_path / "test.csv", review_rows(9, seed=2))
  config = finetune_config(data_path=str(tmp_path / "reviews.csv"), text_field="review", text_b_field="other",
                           label_field="stars", validation_path=str(tmp_path / "dev.jsonl"),
                           test_path=str(tmp_path / "test.csv"))
  task = tasks.for_config(config)
  assert task.kind == "pair"
  assert len(task.read(config, "train")) == 90 and len(task.read(config, "test")) == 9
  first = task.read(config, "validation")[0]
  assert set(first) == {"text_a", "text_b", "label"} and first["text_b"] == "note 0"


def test_file_task_errors(tmp_path):
  write_csv(tmp_path / "reviews.csv", review_rows(30))
  with pytest.raises(file_task.TaskFileError, match=r"reviews.csv, line 2 has no field 'label'.*'stars'.*label_field"):
    tasks.for_config(finetune_config(data_path=str(tmp_path / "reviews.csv"), text_field="review"))
  with pytest.raises(file_task.TaskFileError, match="--config.data_path"):
    tasks.for_config(finetune_config())
  with pytest.raises(file_task.TaskFileError, match="nothing.csv.*matches no file"):
    tasks.for_config(finetune_config(data_path=str(tmp_path / "nothing.csv")))
  write_csv(tmp_path / "one.csv", [(f"only {i}", "x", "pos") for i in range(60)])
  with pytest.raises(file_task.TaskFileError, match="one class only"):
    tasks.for_config(finetune_config(data_path=str(tmp_path / "one.csv"), text_field="review", label_field="stars"))
  write_csv(tmp_path / "same.csv", [("one text", "x", "pos"), ("one text", "y", "neg")])
  with pytest.raises(file_task.TaskFileError, match="no validation examples.*add rows or give --config.validation_path"):
    tasks.for_config(finetune_config(data_path=str(tmp_path / "same.csv"), text_field="review", label_field="stars"))
  (tmp_path / "rows.jsonl").write_text('{"text": "fine", "label": "pos"}\n\n[1, 2]\n{"text": "bad"', encoding="utf-8")
  with pytest.raises(file_task.TaskFileError, match=r"rows.jsonl, line 3 is a JSON list; a .jsonl file holds one JSON obj"):
    tasks.for_config(finetune_config(data_path=str(tmp_path / "rows.jsonl")))
  (tmp_path / "rows.jsonl").write_text('{"text": "fine", "label": "pos"}\n{"text": "bad"', encoding="utf-8")
  with pytest.raises(file_task.TaskFileError, match=r"rows.jsonl, line 2 is not a JSON object"):
    tasks.for_config(finetune_config(data_path=str(tmp_path / "rows.jsonl")))
  with pytest.raises(KeyError, match="data_pth"):
    finetune_config(data_pth="x.csv")


# --- end to end through the CLI --------------------------------------------------------------------


def _train(args, data_dir, devices=2):
  result = run_cli(["train", "--noprogress", *args], data_dir, devices=devices)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow  # the README's own-data block runs the same image_folder train in test_readme: ~85 s
def test_cli_image_folder_train_and_eval(labelled_root, tmp_path, data_dir):
  root, _ = labelled_root
  workdir = str(tmp_path / "simclr")
  own = ["--config.data.name=image_folder", f"--config.data.path={root}", "--config.data.image_size=16"]
  # The few-label probe draws 2 labelled images per class here (the smallest class trains on 8).
  _train(["--config", os.path.join(REPO, "configs", "simclr.py") + ":smoke", "--workdir", workdir, *own,
          "--config.train.evaluate=False", "--config.evals.few_label_probe.labels_per_class=2"], data_dir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f][-1] == 4
  result = run_cli(["eval", "--workdir", workdir], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  report = read_json(os.path.join(workdir, "eval.json"))
  assert report["dataset"] == "image_folder" and report["split"] == "test"
  assert set(report["linear_probe"]["accuracy"]) == {"simclr", "random_init", "raw_pixels"}

  # Unlabelled images of any size, decoded to grayscale: they train; evaluation says why not.
  unlabelled = str(tmp_path / "unlabelled")
  write_images(unlabelled, labelled=False)
  workdir = str(tmp_path / "unlabelled_run")
  own = ["--config.data.name=image_folder", f"--config.data.path={unlabelled}", "--config.data.image_size=16",
         "--config.data.channels=1", "--config.train.evaluate=False"]
  _train(["--config", os.path.join(REPO, "configs", "simclr.py") + ":smoke", "--workdir", workdir, *own], data_dir)
  result = run_cli(["eval", "--workdir", workdir], data_dir)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "needs labelled images" in result.stderr and "class folders" in result.stderr


@pytest.mark.slow  # the README's own-data block runs text_files and the file task in test_readme: ~60 s
def test_cli_text_files_gpt_and_bert_then_finetune_on_a_csv(corpus, tmp_path, data_dir):
  root, _ = corpus
  gpt = str(tmp_path / "gpt")
  _train(["--config", os.path.join(REPO, "configs", "gpt.py") + ":smoke", "--workdir", gpt,
          "--config.data.name=text_files", f"--config.data.path={root}/*.jsonl", "--config.data.text_key=body"],
         data_dir)
  report = read_json(os.path.join(gpt, "eval.json"))
  assert report["dataset"] == "text_files" and "topic" not in report["few_shot"]

  bert = str(tmp_path / "bert")
  _train(["--config", os.path.join(REPO, "configs", "bert.py") + ":smoke", "--workdir", bert,
          "--config.data.name=text_files", f"--config.data.path={root}", "--config.data.text_key=body",
          "--config.train.evaluate=False"], data_dir, devices=1)

  write_csv(tmp_path / "reviews.csv", review_rows(60))
  result = run_cli(["finetune", "--workdir", bert, "--task", "file", "--noprogress",
                    f"--config.data_path={tmp_path / 'reviews.csv'}", "--config.text_field=review",
                    "--config.label_field=stars", "--config.batch_size=8", "--config.eval_batch_size=16",
                    "--config.epochs=1", "--config.min_steps=2", "--config.lrs=(3e-4,)", "--config.seq_len=32"],
                   data_dir, devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  report = read_json(os.path.join(bert, "finetune", "file", "finetune.json"))
  carved = [file_splits.carved_split(r[0]) for r in review_rows(60)]
  assert report["examples"] == {role: carved.count(role) for role in tasks.ROLES}
  assert report["task"] == "file" and report["kind"] == "classify" and "accuracy" in report["baseline"]["test"]

  result = run_cli(["finetune", "--workdir", bert, "--task", "file", f"--config.data_path={tmp_path / 'reviews.csv'}",
                    "--config.label_field=stars"], data_dir, devices=1)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "has no field 'text'" in result.stderr and "--config.text_field" in result.stderr
