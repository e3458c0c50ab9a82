"""sinktrain/modeling runs without sinktrain: exports carry it as remote code, and transformers
refuses a remote module that imports a package the user lacks (it reads every import, at any depth)."""

import sys
from pathlib import Path

from transformers.dynamic_module_utils import get_imports, get_relative_imports

import sinktrain.modeling

FOLDER = Path(sinktrain.modeling.__file__).parent
ALLOWED = {"torch", "transformers", "safetensors"}  # what transformers itself needs


def test_every_module_imports_only_torch_transformers_and_its_neighbours():
    for module in sorted(FOLDER.glob("*.py")):
        outside = {name for name in get_imports(str(module)) if name not in sys.stdlib_module_names}
        assert outside <= ALLOWED, (module.name, outside - ALLOWED)
        for neighbour in get_relative_imports(str(module)):  # flat: transformers copies ./name.py only
            assert (FOLDER / f"{neighbour}.py").is_file(), (module.name, neighbour)
