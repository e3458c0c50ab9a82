"""Importing a tool or recipe script (tools/NAME.py, recipes/NAME.py) as a module, so tests call its
``main(argv)`` and ``parse_args`` in-process."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """``load_script("tools/evaluate.py")``: a fresh module object each call."""
    name = "sinktrain_script_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
