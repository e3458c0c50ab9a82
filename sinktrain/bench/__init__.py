"""Benchmark support: paired timing of a stock and a method variant (timing), the environment record
and JSON report (report), and the in-memory models the overhead benchmark builds per family
(llava, qwen2_vl, with the shared inputs in inputs and the variants and rounds in overhead).
The entry points are tools/bench_overhead.py and tools/bench_find_sink_dims.py.
"""
