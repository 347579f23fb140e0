import pytest
import torch

from .helpers.atlases import atlas  # noqa: F401  (shared fixtures, in tests/helpers)
from .helpers.maps import photo_folder  # noqa: F401


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The same thread count in every test, so results that are compared bit for bit are computed alike.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def lite0():
    from filterscope import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def resnet18_random():
    from filterscope import load_model

    return load_model("resnet18", "random")


def pytest_configure(config):
    # --precision auto caches its probes per machine: keep the tests' out of the user's cache
    import os
    import tempfile

    os.environ.setdefault("FILTERSCOPE_CACHE_DIR", tempfile.mkdtemp(prefix="filterscope-test-cache-"))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # pytest-xdist: the cores shared among the workers (and the processes a test starts)
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_report_header(config):
    """The CPU and the vector instructions the kernels use: a tolerance that fails on one CPU only is then
    visible in the log (``make test`` runs the numerical tests again capped at AVX2, see the Makefile)."""
    import os

    from filterscope.runtime import cpu_description

    capped = " ".join(f"{name}={os.environ[name]}" for name in CPU_CAPS if name in os.environ)
    kernels = torch.backends.cpu.get_cpu_capability() + (f" (capped: {capped})" if capped else "")
    return [f"cpu: {cpu_description()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
            f"kernels: {kernels}"]


CPU_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
