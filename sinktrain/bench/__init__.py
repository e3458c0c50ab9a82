"""Benchmark support: paired timing of a stock and a method variant (timing), the environment record
and JSON report (report), and the in-memory models the benchmarks build per family (llava,
qwen2_vl, with the shared inputs in inputs): LSG and DualMLP training and generation overhead
(overhead), DIYSink's ReW and CoT routing latency (diysink_latency). The entry points are
tools/bench_overhead.py, tools/bench_diysink.py and tools/bench_find_sink_dims.py.
"""
