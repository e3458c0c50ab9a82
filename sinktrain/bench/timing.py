"""Paired timing of a stock and a method variant, robust to a machine shared with other jobs.

    lsg = Comparison("LSG", {"train_step": "train step"}, targets={"train_step": 1.05})
    for index in range(rounds):
        lsg.run(stock_step, gated_step, stock_first=index % 2 == 0, record=index >= warmup)
    rows = lsg.summarise()          # measure -> medians, paired ratio, spread, cpu ratio, verdict
    print_table([lsg])

A variant is a callable returning ``{measure: (wall_s, cpu_s)}`` (``time_call``, ``time_generate``
build those). Each round runs stock and method back to back, so both see the same machine load;
who goes first alternates between rounds. The reported ratio is the median over rounds of
method / stock *from the same round* (robust when the load changes between rounds), its spread
the median absolute deviation of those ratios: a ratio closer to 1 than that is noise. "best" is
fastest method / fastest stock, "cpu" the same paired median on process CPU time (all threads;
less disturbed than wall time by other processes on the machine).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

Times = tuple[float, float]  # (wall seconds, process CPU seconds)


class Clock:
    """Wall and process CPU time at once (CPU time ignores time spent descheduled)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self, other: "Clock") -> Times:
        return self.wall - other.wall, self.cpu - other.cpu


class Stamps(StoppingCriteria):
    """Never stops generation; records a Clock each time a token has been picked."""

    def __init__(self):
        self.clocks: list[Clock] = []

    def __call__(self, input_ids, scores, **kwargs):
        self.clocks.append(Clock())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def time_call(measure: str, call: Callable[[], object]) -> dict[str, Times]:
    """One timed call (garbage collected first, so a collection does not land inside it)."""
    gc.collect()
    start = Clock()
    call()
    return {measure: Clock().since(start)}


def time_generate(generate: Callable[[StoppingCriteriaList], torch.Tensor], new_tokens: int) -> dict[str, Times]:
    """A generate of 1 + new_tokens tokens, timed from per-token stamps.

    ``generate(stopping_criteria)`` must produce exactly 1 + new_tokens tokens (min_new_tokens =
    max_new_tokens). prefill = start to the first token picked (vision tower, connector, the whole
    prompt through the LLM, first argmax); decode_per_token = the median of the KV-cached steps
    after it (a median, so a step that lost its CPU to another process does not move it);
    generate = the whole call."""
    stamps = Stamps()
    gc.collect()
    start = Clock()
    generate(StoppingCriteriaList([stamps]))
    end = Clock()
    clocks = stamps.clocks[: new_tokens + 1]
    if len(clocks) != new_tokens + 1:
        raise RuntimeError(f"generate picked {len(clocks)} tokens, expected {new_tokens + 1}")
    steps = [later.since(earlier) for earlier, later in zip(clocks, clocks[1:])]
    return {
        "prefill": clocks[0].since(start),
        "decode_per_token": tuple(statistics.median(times) for times in zip(*steps)),
        "generate": end.since(start),
    }


def median_abs_deviation(values: list[float]) -> float:
    middle = statistics.median(values)
    return statistics.median(abs(v - middle) for v in values)


def paired_ratios(ours: list[float], theirs: list[float]) -> list[float]:
    return [o / t for o, t in zip(ours, theirs) if t > 0] or [float("nan")]


class Series:
    """One variant's samples: wall and CPU seconds per measure, one per timed round."""

    def __init__(self, measures):
        self.wall: dict[str, list[float]] = {measure: [] for measure in measures}
        self.cpu: dict[str, list[float]] = {measure: [] for measure in measures}

    def record(self, times: dict[str, Times]) -> None:
        for measure, (wall, cpu) in times.items():
            self.wall[measure].append(wall)
            self.cpu[measure].append(cpu)


class Comparison:
    """A method against stock on some measures, each round's pair timed back to back."""

    def __init__(self, method: str, labels: dict[str, str], targets: dict[str, float], keys: dict[str, str] | None = None):
        self.method, self.labels, self.targets = method, labels, targets
        self.keys = keys or {measure: measure for measure in labels}  # measure -> its key in the report
        self.stock, self.ours = Series(labels), Series(labels)

    def run(self, stock: Callable[[], dict[str, Times]], method: Callable[[], dict[str, Times]], stock_first: bool, record: bool) -> None:
        pair = ((self.stock, stock), (self.ours, method))
        for series, variant in pair if stock_first else reversed(pair):
            times = variant()
            if record:
                series.record(times)

    def summarise(self) -> dict[str, dict]:
        rows = {}
        for measure in self.labels:
            ours, theirs = self.ours.wall[measure], self.stock.wall[measure]
            paired = paired_ratios(ours, theirs)
            ratio = statistics.median(paired)
            target = self.targets.get(measure)
            rows[self.keys[measure]] = {
                "method": self.method,
                "label": self.labels[measure],
                "stock_ms": 1000 * statistics.median(theirs),
                "method_ms": 1000 * statistics.median(ours),
                "ratio": ratio,  # median over rounds of method / stock measured back to back
                "ratio_spread_pct": 100 * median_abs_deviation(paired),
                "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
                "best_ratio": min(ours) / min(theirs),
                "cpu_time_ratio": statistics.median(paired_ratios(self.ours.cpu[measure], self.stock.cpu[measure])),
                "target": target,
                "pass": ratio <= target if target is not None else None,
                "stock_samples_ms": [1000 * v for v in theirs],
                "method_samples_ms": [1000 * v for v in ours],
                "stock_cpu_samples_ms": [1000 * v for v in self.stock.cpu[measure]],
                "method_cpu_samples_ms": [1000 * v for v in self.ours.cpu[measure]],
            }
        return rows


def verdict(row: dict) -> str:
    if row["pass"] is None:
        return "(info)"
    text = "PASS" if row["pass"] else "FAIL"
    if abs(row["ratio"] - 1) < row["ratio_spread_pct"] / 100:
        text += " (within noise)"
    return text


def print_table(rows: dict[str, dict]) -> None:
    """The rows of one or more Comparison.summarise() as one table."""
    width = max(len(f"{row['method']} {row['label']}") for row in rows.values()) + 2
    header = (
        f"{'measure':<{width}}{'stock ms':>10}{'method ms':>11}{'ratio':>8}{'+-':>7}{'best':>7}{'cpu':>7}{'target':>8}"
        "  verdict"
    )
    print(header)
    print("-" * len(header))
    for row in rows.values():
        target = f"<={row['target']:.2f}" if row["target"] is not None else ""
        print(
            f"{row['method'] + ' ' + row['label']:<{width}}{row['stock_ms']:>10.1f}{row['method_ms']:>11.1f}"
            f"{row['ratio']:>8.3f}{row['ratio_spread_pct'] / 100:>7.3f}{row['best_ratio']:>7.3f}"
            f"{row['cpu_time_ratio']:>7.3f}{target:>8}  {verdict(row)}"
        )


LEGEND = (
    "ms: medians over the rounds. ratio: median over the rounds of method / stock, run back to back; +-: its median "
    "absolute\ndeviation (a ratio closer to 1 than that is noise). best: fastest method / fastest stock. cpu: the "
    "paired ratio of process\nCPU time (all threads)."
)
