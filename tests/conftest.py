import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
