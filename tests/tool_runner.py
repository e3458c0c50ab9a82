"""A tools/ script's ``main`` run in this process: a call, not a Python start that imports torch,
transformers and the model code again (~6 s a run on CI's 2-core machine). For the tests that
check what a tool computes; each tool's command line (exit codes, console) keeps runs of its own
as a subprocess (e.g. tests/test_find_sink_dims.py, tests/test_recipes_families.py).

    printed = run_tool_here("find_sink_dims.py", "--model", "demo:qwen2_vl", "--out", str(out))
"""

import contextlib
import io

import torch

from console import check_quiet
from scripts import load_script
from sinktrain.log import quiet_third_party


def run_tool_here(name: str, *flags: str) -> str:
    """What tools/``name`` printed; its main must succeed (return 0 or nothing) and print no
    third-party noise. A tool that sets torch's thread count (--threads) leaves this process's as it was."""
    quiet_third_party()  # as the tool's own main_guard does
    printed, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            code = load_script(f"tools/{name}").main(list(flags))
    finally:
        torch.set_num_threads(threads)
    assert not code, printed.getvalue()[-3000:]
    check_quiet(printed.getvalue())
    return printed.getvalue()
