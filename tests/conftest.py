import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _cache_outside_home(tmp_path_factory):
    """No test writes to the user's cache: every default cache directory points into a temporary one."""
    old = os.environ.get("FINEGRAIN_CACHE")
    os.environ["FINEGRAIN_CACHE"] = str(tmp_path_factory.mktemp("finegrain-cache"))
    yield
    if old is None:
        os.environ.pop("FINEGRAIN_CACHE", None)
    else:
        os.environ["FINEGRAIN_CACHE"] = old


@pytest.fixture(scope="session")
def minilm():
    from finegrain.models import load_model

    return load_model("minilm", device="cpu")


@pytest.fixture
def tiny_bert():
    from finegrain.testing import tiny_bert

    return tiny_bert()


@pytest.fixture
def tiny_gpt2():
    from finegrain.testing import tiny_gpt2

    return tiny_gpt2()
