"""Benchmark tests read tiny local datasets only: the Hub is never asked (offline), and datasets'
cache is a temporary directory removed after the session. Set at import, before ``datasets`` and
``huggingface_hub`` read their settings (the tests' own modules import them)."""

import os
import shutil
import tempfile

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = CACHE = tempfile.mkdtemp(prefix="sinktrain-hf-datasets-")


@pytest.fixture(scope="session", autouse=True)
def _remove_datasets_cache():
    yield
    shutil.rmtree(CACHE, ignore_errors=True)
