"""Running a benchmark: rows -> items -> greedy answers split over ranks -> gathered -> judged -> scored.

    run = run_benchmark(backbone, bench, rows, gating=None, method=None, batch_size=16)

Every rank builds the same batches from the same items and generates every world-th one
(``sinktrain.eval.generate.generate_answers``), so each sample is generated in exactly the batch
it would be in on a single rank: the gathered answers, hence the scores, equal a one-rank run's
exactly. Generation is the evaluation path every method already uses (``--method``, ``--gates``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from sinktrain.benchmarks.base import Benchmark, Item, Judged, LazyImages, Scores
from sinktrain.benchmarks.ranks import gather
from sinktrain.data.chat.conversation import HUMAN, IMAGE_PLACEHOLDER
from sinktrain.data.eval_set import EvalSample
from sinktrain.errors import SinkTrainError
from sinktrain.eval.generate import Answers, generate_answers, timing


@dataclass
class BenchmarkRun:
    bench: Benchmark
    items: list[Item]
    responses: list[str]
    judged: list[Judged]
    scores: Scores
    details: list[dict | None]
    r_sink: dict[int, list[float]] = field(default_factory=dict)  # gated layer -> r_sink per item
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def unparsed(self) -> int:
        return sum(verdict.parsed is None for verdict in self.judged)


def build_items(bench: Benchmark, rows) -> list[Item]:
    """Every row's item; image columns are left in the memory-mapped dataset until batched."""
    image_rows = undecoded(rows.select_columns(list(bench.image_columns)))
    text_rows = rows.remove_columns(list(bench.image_columns))
    items = [bench.item(row, lambda *columns, i=index: LazyImages(image_rows, i, columns)) for index, row in enumerate(text_rows)]
    items = [item if item.key else replace(item, key=str(index)) for index, item in enumerate(items)]
    items = numbered(items) if bench.keys_repeat else items
    duplicate = next((key for key, count in Counter(item.key for item in items).items() if count > 1), None)
    if duplicate is not None:
        raise SinkTrainError(f"{bench.name}: two rows share the id {duplicate!r}; the data is not {bench.hub_id}'s (ids are unique there)")
    return items


def undecoded(image_rows):
    """The image columns as stored ({"bytes", "path"}): a row read decodes none of them."""
    from datasets import Image as ImageFeature

    for column in image_rows.column_names:
        image_rows = image_rows.cast_column(column, ImageFeature(decode=False))
    return image_rows


def numbered(items: list[Item]) -> list[Item]:
    """Each key made unique by its order among the rows that share it: "id#1", "id#2"."""
    seen: dict[str, int] = {}
    out = []
    for item in items:
        seen[item.key] = seen.get(item.key, 0) + 1
        out.append(replace(item, key=f"{item.key}#{seen[item.key]}"))
    return out


def as_sample(item: Item) -> EvalSample:
    """The generation prompt: the images first, as the reference evaluations put them (LLaVA's
    ``<image>`` markers, one per image, then a newline), then the benchmark's text."""
    markers = " ".join([IMAGE_PLACEHOLDER] * len(item.images))
    question = f"{markers}\n{item.text}" if markers else item.text
    return EvalSample(item.key, item.group, [{"from": HUMAN, "value": question}], str(item.gold), item.images)


def run_benchmark(
    backbone,
    bench: Benchmark,
    rows,
    gating=None,
    method=None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    template: str | None = None,
    progress: bool = False,
    share: tuple[int, int] = (0, 1),
) -> BenchmarkRun:
    """Generate this rank's share of answers, gather every rank's, and judge and score them all
    (every rank returns the same run)."""
    items = build_items(bench, rows)
    samples = [as_sample(item) for item in items]
    answers = generate_answers(
        backbone, samples, gating, batch_size, max_new_tokens or bench.max_new_tokens, template, method,
        progress and share[0] == 0, share,
    )
    answers = merge(gather(answers)) if share[1] > 1 else answers
    run = score_responses(bench, items, answers.texts)
    run.details, run.r_sink, run.timing = answers.details, answers.r_sink, timing(answers.clock, len(items))
    return run


def score_responses(bench: Benchmark, items: list[Item], responses: list[str]) -> BenchmarkRun:
    """Judge every response and score the benchmark (also how tests score scripted answers)."""
    judged = [bench.judge(item, response) for item, response in zip(items, responses)]
    return BenchmarkRun(bench, items, list(responses), judged, bench.scores(items, judged), [None] * len(items))


def merge(shares: list[Answers]) -> Answers:
    """One Answers from every rank's: each sample's text, details and r_sink from the rank that
    generated it; the clocks summed (seconds per sample stay compute time per sample)."""
    count = len(shares[0].texts)
    owner = [next(a for a in shares if a.texts[i] is not None) for i in range(count)]
    layers = sorted({layer for a in shares for layer in a.r_sink})
    return Answers(
        [owner[i].texts[i] for i in range(count)],
        [owner[i].details[i] for i in range(count)],
        {layer: [owner[i].r_sink[layer][i] for i in range(count)] for layer in layers},
        {name: sum(a.clock[name] for a in shares) for name in shares[0].clock},
    )
