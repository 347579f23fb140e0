import pytest
import torch


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
