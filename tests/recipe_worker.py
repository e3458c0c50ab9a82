"""One process that runs many recipe command lines that must fail early, so each costs a call, not a
Python start with torch, transformers and DeepSpeed imports (tests/test_recipe_errors.py). Only for
runs that stop before training: DeepSpeed keeps process-group state that a second in-process
training run trips over.

    worker = RecipeWorker()                    # starts `python tests/recipe_worker.py`
    code, stderr = worker.run("recipes/diysink_finetune.py", "--max_pixels", "5")

Each line it reads is a JSON [script, argv]; it runs the script's ``main`` under the recipes' own
``main_guard`` (exit code 2 and "error: ..." on stderr for a SinkTrainError, the process group torn
down after each) and answers a line MARK + JSON {"code", "stderr"}. Exit codes and messages are the CLI's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "@recipe-worker@ "  # answers start with it: libraries print to stdout too


def load_main(script: str, cache: dict):
    if script not in cache:
        spec = importlib.util.spec_from_file_location(f"recipe_{len(cache)}", ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cache[script] = module.main
    return cache[script]


def serve() -> None:
    from sinktrain.recipe import main_guard

    mains: dict = {}
    for line in sys.stdin:
        script, argv = json.loads(line)
        main = load_main(script, mains)
        err, code = io.StringIO(), 0
        with contextlib.redirect_stderr(err):
            try:
                main_guard(lambda: main(argv))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception as unexpected:  # a crash is a test failure, with its message
                code, _ = 1, print(f"crash: {unexpected!r}", file=sys.stderr)
        print(MARK + json.dumps({"code": code, "stderr": err.getvalue()}), flush=True)


class RecipeWorker:
    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )

    def run(self, script: str, *argv: str) -> tuple[int, str]:
        self.process.stdin.write(json.dumps([script, list(argv)]) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(MARK):
                answer = json.loads(line[len(MARK):])
                return answer["code"], answer["stderr"]
        raise RuntimeError("the recipe worker died")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    serve()
