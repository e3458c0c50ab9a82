"""Shared fixtures: a per-session sinktrain cache and the tiny demo LLaVA built into it."""

import os

import pytest

import sinktrain.demo


@pytest.fixture(scope="session", autouse=True)
def _sinktrain_cache(tmp_path_factory):
    os.environ["SINKTRAIN_CACHE"] = str(tmp_path_factory.mktemp("sinktrain-cache"))


@pytest.fixture(scope="session")
def demo_model_dir():
    return sinktrain.demo.ensure_demo_model()
