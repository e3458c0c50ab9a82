"""The embedded default: tiny real backbones and synthetic-scene shards, built once and cached.

    python -m sinktrain.demo          # build everything into $SINKTRAIN_CACHE and print where

The cache lives in ``$SINKTRAIN_CACHE`` (default ``~/.cache/sinktrain``). Every artefact is
bitwise reproducible from its seed (``sinktrain.demo.cache.reproducible``) and written to a
temporary sibling before it is renamed into place, so an interrupted build is simply redone.
"""

from sinktrain.demo.cache import cache_dir
from sinktrain.demo.data import demo_data_pattern, demo_eval_pattern, ensure_demo_shards
from sinktrain.demo.llava import ensure_demo_model
from sinktrain.demo.trained import ensure_demo_trained_model

__all__ = ["cache_dir", "demo_data_pattern", "demo_eval_pattern", "ensure_demo_model", "ensure_demo_shards", "ensure_demo_trained_model"]
