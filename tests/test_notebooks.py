"""Every notebook executes top to bottom with the small-size switch on."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

# tests/test_table.py executes compare_objectives.ipynb itself and checks its outputs.
CHECKED_ELSEWHERE = {"compare_objectives.ipynb"}
NOTEBOOKS = sorted(
    path for path in glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks", "*.ipynb"))
    if os.path.basename(path) not in CHECKED_ELSEWHERE
)


# A minute each, training what test_readme's blocks train; losses_in_your_code.ipynb (which the
# README shows) runs by default.
SLOW = {"bert.ipynb", "clip.ipynb", "gpt.ipynb", "pretrained.ipynb", "quickstart.ipynb"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW else p
                                  for p in NOTEBOOKS], ids=os.path.basename)
def test_notebook_runs(path, data_dir, monkeypatch):
  monkeypatch.setenv("SSLJAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("SSLJAX_DATA_DIR", data_dir)
  # The kernel is a fresh process: it must not inherit the test session's 8 fake devices.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors


ALL_NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks", "*.ipynb")))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=os.path.basename)
def test_install_cell_installs_from_the_repository_url_in_setup_cfg(path):
  """A fresh Colab runtime has no checkout: the first cell must install from the project's
  repository, whose address is written once, as setup.cfg's Source URL."""
  import configparser

  config = configparser.ConfigParser()
  config.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg"))
  urls = dict(line.split(" = ", 1) for line in config["metadata"]["project_urls"].strip().splitlines())
  first_code = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
  assert f'%pip install -q "git+{urls["Source"]}"' in first_code
  assert "%pip install -q ssljax\n" not in first_code + "\n"
