"""The papers' benchmarks, loaded with ``datasets`` and scored by each benchmark's own rules.

    from sinktrain.benchmarks import get_benchmark, load_rows, run_benchmark
    bench = get_benchmark("mmstar")
    run = run_benchmark(backbone, bench, load_rows(bench, "/data/MMStar", limit=100))
    print(run.markdown())

One file per benchmark (its Hub location, columns, prompt, answer reading and metric), the answer
extractors they share (``extract``), loading (``loading``), the multi-rank runner (``runner``) and
the written results (``report``). LSG (per-layer search, Tables 1-2) uses MMStar and CV-Bench,
OCRBench and MathVista; DIYSink reports POPE, MME, MMStar, ScienceQA-IMG and MMMU.
"""

from __future__ import annotations

from importlib import import_module

from sinktrain.benchmarks.base import Benchmark
from sinktrain.benchmarks.loading import load_rows
from sinktrain.errors import SinkTrainError

BENCHMARKS = {
    "mmstar": "mmstar:MMStar",
    "cvbench": "cvbench:CVBench",
    "pope": "pope:POPE",
    "mme": "mme:MME",
    "scienceqa_img": "scienceqa:ScienceQAImg",
    "mmmu": "mmmu:MMMU",
    "ocrbench": "ocrbench:OCRBench",
    "mathvista": "mathvista:MathVista",
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise SinkTrainError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    module, cls = BENCHMARKS[name].split(":")
    return getattr(import_module(f"sinktrain.benchmarks.{module}"), cls)()


def run_benchmark(*args, **kwargs):
    from sinktrain.benchmarks.runner import run_benchmark as run

    return run(*args, **kwargs)


__all__ = ["BENCHMARKS", "Benchmark", "get_benchmark", "load_rows", "run_benchmark"]
