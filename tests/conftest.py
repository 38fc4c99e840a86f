"""Test setup: 8 fake CPU devices, set before JAX initialises its backends."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# CLI runs in subprocesses share compiled programs (every xdist worker, the whole session).
os.environ.setdefault("SSLJAX_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "ssljax-test-xla-cache"))

import jax  # noqa: E402  (must come after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data dir per test session, so bundled datasets are built once."""
  return str(tmp_path_factory.mktemp("tfds"))
