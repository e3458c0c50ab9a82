"""Fixtures of the per-family contract tests: one parameter per entry of families.FAMILIES."""

import io

import pytest
from PIL import Image

from families import FAMILIES, Family
from sinktrain import demo
from sinktrain.backbones.registry import load_backbone
from sinktrain.data.scenes import demo_samples


@pytest.fixture(params=list(FAMILIES), scope="module")
def family(request) -> Family:
    return FAMILIES[request.param]


@pytest.fixture(scope="module")
def model_dir(family):
    return demo.ensure_demo_model(family.name)


@pytest.fixture(scope="module")
def stock(model_dir):
    """A backbone whose model nothing is attached to (its hooks only record slot state)."""
    return load_backbone(str(model_dir))


@pytest.fixture
def fresh(model_dir):
    """A backbone each test may modify."""
    return load_backbone(str(model_dir))


@pytest.fixture(scope="module")
def scenes(family) -> list[tuple[dict, Image.Image | None]]:
    """60 demo samples as (record, PIL image or None), as the family's tests use them."""
    return family.scenes([(record, Image.open(io.BytesIO(png)).convert("RGB") if png else None) for record, png in demo_samples(60, seed=1)])
