"""Plain-text tables of evaluation results, for the terminal (tools/evaluate.py prints them).

    print(results_table(results))          # accuracy per category, then r_sink per layer
"""

from __future__ import annotations


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned first column, right-aligned numbers, columns as wide as their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def accuracy_table(results) -> str:
    rows = [[c, str(v["count"]), f"{v['accuracy']:.2f}"] for c, v in results.per_category().items()]
    return format_rows(["category", "n", "accuracy %"], rows)


def r_sink_table(results) -> str:
    """Rows: categories; columns: gated layers; cells: mean +- std of r_sink (paper Fig. 8)."""
    stats = results.r_sink_stats()
    layers = list(stats)
    rows = [[c] + [f"{stats[l][c]['mean']:.3f} +- {stats[l][c]['std']:.3f}" for l in layers] for c in next(iter(stats.values()))]
    return format_rows(["r_sink"] + [f"layer {l}" for l in layers], rows)


def timing_line(results) -> str:
    """Method, time per sample and the part of it the method added (DIYSink's reported latency)."""
    timing = results.timing
    line = f"method {results.method}"
    if timing:
        line += f": {timing['seconds_per_sample']:.4f} s/sample, of which the method's own work {timing['method_seconds_per_sample']:.4f} s"
    for name, value in results.summary.items():
        line += f"; {name} {value}"
    return line


def results_table(results, with_r_sink: bool = True) -> str:
    tables = [accuracy_table(results), timing_line(results)]
    if with_r_sink and results.r_sink:
        tables.append(r_sink_table(results))
    return "\n\n".join(tables)
