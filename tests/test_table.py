"""The evaluation table on the smoke configs, its Markdown form, its command line, and the
compare_objectives notebook in its small mode."""

import json
import os

import nbclient
import nbformat
import pytest

from ssljax import table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ["simclr", "rotation", "random_init", "raw_pixels"]


@pytest.fixture(scope="module")
def smoke_table(tmp_path_factory, data_dir):
  root = str(tmp_path_factory.mktemp("table"))
  report = table.run_table("mnist5k", ("simclr", "rotation"), root, overrides={"data.data_dir": data_dir},
                           progress=False, variant="smoke")
  return root, report


def test_table_json_has_every_method_and_column(smoke_table):
  root, report = smoke_table
  with open(os.path.join(root, "table.json")) as f:
    saved = json.load(f)
  assert saved == report and saved["split"] == "test" and saved["dataset"] == "mnist5k"
  saved = saved["results"]
  assert list(saved) == ROWS
  for name, row in saved.items():
    assert set(row) == {"linear_probe", "linear_probe_10_per_class", "linear_probe_10_per_class_std", "knn",
                        "pretrain_seconds"}, name
    for column in ("linear_probe", "linear_probe_10_per_class", "knn"):
      assert 0.2 < row[column] <= 1.0, (name, column, row)  # above twice the chance of 10 digits
  assert saved["raw_pixels"]["linear_probe"] > 0.85 and saved["raw_pixels"]["knn"] > 0.85, saved["raw_pixels"]
  assert saved["simclr"]["pretrain_seconds"] > 0 and saved["rotation"]["pretrain_seconds"] > 0
  assert saved["random_init"]["pretrain_seconds"] == 0 and saved["raw_pixels"]["pretrain_seconds"] == 0
  for name in ("simclr", "rotation"):  # each objective trained in its own workdir, to the end
    assert os.path.isdir(os.path.join(root, name, "checkpoints", "4"))


@pytest.mark.slow  # ~30 s
def test_table_command_reuses_finished_runs(smoke_table, data_dir, capsys):
  root, report = smoke_table
  again = table.main(["--workdir", root, "--objectives", "rotation", "--variant", "smoke",
                      "--override", f"data.data_dir={data_dir}", "--noprogress", "--markdown"])
  # Same run, same recorded time, same (deterministic) probes: nothing was retrained.
  assert again["results"]["rotation"] == report["results"]["rotation"]
  out = capsys.readouterr().out
  assert "linear_probe_10_per_class" in out and "table.json" in out
  assert "| rotation |" in out
  validation = table.main(["--workdir", root, "--objectives", "rotation", "--variant", "smoke", "--split",
                           "validation", "--override", f"data.data_dir={data_dir}", "--noprogress"])
  assert os.path.exists(os.path.join(root, "table_validation.json")) and validation["split"] == "validation"
  assert validation["results"]["rotation"]["pretrain_seconds"] == report["results"]["rotation"]["pretrain_seconds"]


def test_a_changed_config_does_not_resume_the_old_run(smoke_table, data_dir):
  root, _ = smoke_table
  checkpoints = os.path.join(root, "rotation", "checkpoints")
  before = sorted(os.listdir(checkpoints))
  with pytest.raises(ValueError, match="another config.*train.steps"):
    table.run_table("mnist5k", ("rotation",), root, overrides={"data.data_dir": data_dir, "train.steps": 6},
                    progress=False, variant="smoke")
  assert sorted(os.listdir(checkpoints)) == before and "4" in before  # nothing trained or removed


def test_markdown_table():
  results = {
      "byol": {"linear_probe": 0.9512, "linear_probe_10_per_class": 0.8, "linear_probe_10_per_class_std": 0.0123,
               "knn": 0.9, "pretrain_seconds": 301.4},
      "raw_pixels": {"linear_probe": 0.88, "linear_probe_10_per_class": 0.7, "linear_probe_10_per_class_std": 0.02,
                     "knn": 0.93, "pretrain_seconds": 0.0},
  }
  lines = table.markdown_table({"dataset": "mnist5k", "split": "test", "results": results}).splitlines()
  assert len(lines) == 4
  assert "10 per class" in lines[0]
  assert lines[2] == "| byol | 95.1 | 80.0 ± 1.2 | 90.0 | 301 |"
  assert lines[3] == "| raw_pixels | 88.0 | 70.0 ± 2.0 | 93.0 | – |"


def test_bad_requests_fail_before_training(tmp_path):
  with pytest.raises(FileNotFoundError, match="simclrr"):
    table.run_table("mnist5k", ("simclrr",), str(tmp_path), variant="smoke")
  with pytest.raises(ValueError, match="cifar10"):
    table.run_table("cifar10", ("rotation",), str(tmp_path), variant="smoke")
  with pytest.raises(KeyError, match="stepz"):
    table.run_table("mnist5k", ("rotation",), str(tmp_path), overrides={"train.stepz": 3}, variant="smoke")
  assert not os.listdir(tmp_path)


def test_table_command_line_entry_point():
  import subprocess
  import sys

  result = subprocess.run([sys.executable, "-m", "ssljax.cli", "table", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "--split" in result.stdout and "--dataset" in result.stdout


def test_default_configs_dir_is_the_repository_configs():
  assert os.path.samefile(table.default_configs_dir(), os.path.join(REPO, "configs"))


@pytest.mark.slow  # the table's own tests run the same code; the notebook on top: ~70 s
def test_compare_objectives_notebook_runs_small(data_dir, monkeypatch):
  monkeypatch.setenv("SSLJAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("SSLJAX_DATA_DIR", data_dir)
  notebooks = os.path.join(REPO, "notebooks")
  nb = nbformat.read(os.path.join(notebooks, "compare_objectives.ipynb"), as_version=4)
  nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": notebooks}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "linear_probe_10_per_class" in outputs
  assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
