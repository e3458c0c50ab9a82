"""The embedded default: tiny real backbones and synthetic-scene shards, built once and cached.

    python -m sinktrain.demo          # build everything into $SINKTRAIN_CACHE and print where

Every family has a tiny model (``--model demo:llava`` or just ``demo``, ``demo:qwen2_vl``,
``demo:qwen2_5_vl``, ``demo:llava_onevision``, ``demo:deepseek_vl``, ``demo:deepseek_vl_hybrid``): a real transformers class with planted V-sink and L-sink channels, and a
*trained* variant (``sinktrain.demo.trained``) that LSG and the evaluation tools start from. The
cache lives in ``$SINKTRAIN_CACHE`` (default ``~/.cache/sinktrain``). Every artefact is bitwise
reproducible from its seed (``sinktrain.demo.cache.reproducible``) and written to a temporary
sibling before it is renamed into place, so an interrupted build is simply redone.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from sinktrain.demo import deepseek_vl, deepseek_vl_hybrid, llava, llava_onevision, qwen2_vl, sentence_encoder
from sinktrain.demo.cache import DEMO_VERSION, build_once, cache_dir
from sinktrain.demo.data import demo_caption_pattern, demo_data_pattern, demo_eval_pattern, demo_multi_image_pattern, ensure_demo_shards
from sinktrain.errors import SinkTrainError

BUILDERS: dict[str, Callable[[Path], None]] = {
    "llava": llava.build_demo_model,
    "qwen2_vl": partial(qwen2_vl.build, windowed=False),
    "qwen2_5_vl": partial(qwen2_vl.build, windowed=True),
    "llava_onevision": llava_onevision.build,
    "deepseek_vl": deepseek_vl.build,
    "deepseek_vl_hybrid": deepseek_vl_hybrid.build,
}
DEFAULT = "llava"
PREFIX = "demo"

__all__ = [
    "BUILDERS", "cache_dir", "demo_caption_pattern", "ensure_demo_sentence_encoder", "demo_data_pattern", "demo_eval_pattern", "demo_multi_image_pattern", "ensure_demo_model",
    "ensure_demo_rew_set", "ensure_demo_shards", "ensure_demo_trained_model", "resolve", "rew_data", "trained_builder", "training_data",
]
MULTI_IMAGE_FAMILIES = ("llava_onevision",)  # trained on multi-image samples; the others keep the data their numbers were measured on


def check_name(name: str) -> str:
    if name not in BUILDERS:
        raise SinkTrainError(f"no demo model {name!r}; use demo or demo:FAMILY with FAMILY one of {', '.join(BUILDERS)}")
    return name


def ensure_demo_model(name: str = DEFAULT) -> Path:
    return build_once(cache_dir() / f"demo-{check_name(name)}-v{DEMO_VERSION}", BUILDERS[name])


def trained_builder(name: str, steps: int | None = None) -> Callable[[Path], None]:
    """Builds ``name``'s trained demo model into a directory: its demo model finetuned on the data
    its recipes train on (``training_data``); ``steps`` shortens the schedule (tests)."""
    from sinktrain.demo.trained import PRETRAIN_STEPS, pretrain_demo_model

    spec = f"{PREFIX}:{check_name(name)}"

    def build(out_dir: Path) -> None:  # the base model and shards are looked up only when building
        pretrain_demo_model(ensure_demo_model(name), out_dir, steps or PRETRAIN_STEPS, training_data(spec))

    return build


def ensure_demo_trained_model(name: str = DEFAULT) -> Path:
    return build_once(cache_dir() / f"demo-{check_name(name)}-trained-v{DEMO_VERSION}", trained_builder(name))


def ensure_demo_rew_set(name: str = DEFAULT) -> Path:
    """The ReW demo shards of ``name`` (sinktrain.demo.rew_set), answered by its trained demo model."""
    from sinktrain.demo import rew_set

    trained = ensure_demo_trained_model(name)
    return build_once(cache_dir() / f"demo-{check_name(name)}-rew-set-v{DEMO_VERSION}", partial(rew_set.build, trained))


def rew_data(spec: str | None) -> str:
    """The default --data of recipes/diysink_rew.py for a demo --model: its family's ReW demo set."""
    from sinktrain.demo import rew_set

    return rew_set.shard_pattern(ensure_demo_rew_set(demo_name(spec) or DEFAULT))


def ensure_demo_sentence_encoder() -> Path:
    """The tiny sentence encoder ReW reads demo questions with (sinktrain.demo.sentence_encoder)."""
    return build_once(cache_dir() / f"demo-sentence-encoder-v{DEMO_VERSION}", sentence_encoder.build)


def demo_name(spec: str | None) -> str | None:
    """The family of a demo spec ("demo", "demo:qwen2_vl"), None for a real model (or no --model: the demo)."""
    if spec is None or spec == PREFIX:
        return DEFAULT
    if spec.startswith(PREFIX + ":"):
        return check_name(spec.split(":", 1)[1])
    return None


def training_data(spec: str | None) -> str:
    """The default --data for a demo --model: the demo shards, plus the multi-image demo shards for
    a family that trains on multi-image samples (LLaVA-OneVision), so one stream mixes single-image,
    multi-image and text-only samples."""
    if demo_name(spec) in MULTI_IMAGE_FAMILIES:
        return demo_data_pattern() + "::" + demo_multi_image_pattern()
    return demo_data_pattern()


def resolve(spec: str | None, trained: bool = False) -> str:
    """A --model value as a model path: demo specs build (once) that family's tiny model (its
    trained variant with ``trained``); anything else is a directory or hub id, returned as is."""
    name = demo_name(spec)
    if name is None:
        return spec
    return str(ensure_demo_trained_model(name) if trained else ensure_demo_model(name))
