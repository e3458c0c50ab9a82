"""A benchmark run, written: results JSON, a Markdown table, and every prediction (JSON lines).

    paths = write_run(run, "results/mmstar.json", setup)   # + mmstar.md, mmstar.predictions.jsonl

Each file is written beside its final name and renamed into place, so an interrupted run never
leaves a results file that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from sinktrain.benchmarks.runner import BenchmarkRun
from sinktrain.eval.results import mean_std
from sinktrain.train.checkpoint import write_atomically

EXTRACTION = "sinktrain.benchmarks.extract: letter / option text / yes-no / number readers; no answer read = wrong, counted as unparsed"


def to_dict(run: BenchmarkRun, setup: dict) -> dict:
    bench = run.bench
    out = {
        "benchmark": bench.name,
        **setup,
        "samples": len(run.items),
        "scores": run.scores.headline,
        "unparsed": run.unparsed,
        "tables": run.scores.tables,
        "notes": run.scores.notes,
        "reference": bench.reference,
        "extraction": EXTRACTION,
        "timing": run.timing,
    }
    if run.r_sink:
        out["r_sink"] = r_sink_per_group(run)
    return out


def r_sink_per_group(run: BenchmarkRun) -> dict[str, dict[str, dict[str, float]]]:
    """{layer: {sub-task: {mean, std, n}}} of the gates' r_sink (LSG paper Fig. 8), "all" last."""
    groups = sorted({item.group for item in run.items})
    return {
        str(layer): {g: mean_std([v for v, item in zip(values, run.items) if g in ("all", item.group)]) for g in [*groups, "all"]}
        for layer, values in sorted(run.r_sink.items())
    }


def markdown(run: BenchmarkRun, setup: dict) -> str:
    bench = run.bench
    described = ", ".join(f"{k} {v}" for k, v in setup.items() if isinstance(v, (str, int)) and k != "benchmark")
    lines = [f"## {bench.name}", "", f"{len(run.items)} samples; {described}", ""]
    lines += table([{"score": name, "value": value} for name, value in run.scores.headline.items()] + [{"score": "unparsed", "value": run.unparsed}])
    for title, rows in run.scores.tables.items():
        lines += ["", f"### {title}", "", *table(rows)]
    lines += ["", *[f"- {note}" for note in run.scores.notes]] if run.scores.notes else []
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> list[str]:
    header = list(rows[0])
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header))) + "|",
        *["| " + " | ".join(cell(row.get(column, "")) for column in header) + " |" for row in rows],
    ]


def cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def prediction_lines(run: BenchmarkRun) -> str:
    lines = []
    for i, (item, response, verdict) in enumerate(zip(run.items, run.responses, run.judged)):
        record = {
            "key": item.key, "group": item.group, "prompt": item.text, "images": len(item.images), "response": response,
            "parsed": verdict.parsed, "gold": item.gold, "correct": verdict.correct,
        }
        if run.details[i] is not None:
            record["details"] = run.details[i]
        lines.append(json.dumps(record, default=str))
    return "\n".join(lines) + "\n"


def output_paths(out: str | Path) -> dict[str, Path]:
    """results.json -> the JSON itself, results.md and results.predictions.jsonl beside it."""
    path = Path(out)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return {kind: path.with_name(stem + suffix) for kind, suffix in (("json", ".json"), ("markdown", ".md"), ("predictions", ".predictions.jsonl"))}


def write_run(run: BenchmarkRun, out: str | Path, setup: dict) -> dict[str, Path]:
    paths = output_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    write_atomically(paths["predictions"], prediction_lines(run))
    write_atomically(paths["markdown"], markdown(run, setup))
    write_atomically(paths["json"], json.dumps(to_dict(run, setup), indent=2, default=str))  # last: its presence means done
    return paths
