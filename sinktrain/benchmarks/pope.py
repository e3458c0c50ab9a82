"""POPE (Li et al. 2023): object-hallucination probing, "Is there a <object> in the image?" over
500 COCO val2014 images, half the answers yes; the negatives are drawn three ways (splits
adversarial, popular, random, 3000 questions each). DIYSink reports it.

Data: ``lmms-lab/POPE`` (the same files are at ``lmms-lab-encoder/POPE``), config ``default``,
split ``test``: all 9000 rows, the split named in ``category``; ``answer`` is "yes"/"no". Prompt:
lmms-eval's default, the question then "Answer the question using a single word or phrase."

Reported, per split and pooled: accuracy, precision, recall and F1 with "yes" the positive class,
yes_ratio and unparsed; headline: pooled accuracy and F1, and the mean F1 over the splits present
(the LLaVA-1.5 paper's single POPE number). Departures from lmms-eval, whose only reader is an exact
match of the whole response: answers are read with ``extract.yes_no`` ("Yes." and "There is no
dog." count; lmms-eval scores both wrong), and yes_ratio is the share of *predicted* yes as in
LLaVA's eval_pope.py (lmms-eval's is the share of gold yes, always 0.5).
"""

from __future__ import annotations

from collections.abc import Iterable

from sinktrain.benchmarks.base import SHORT_ANSWER, Benchmark, Item, Judged, Scores, mean, percent
from sinktrain.benchmarks.extract import yes_no
from sinktrain.errors import SinkTrainError


class POPE(Benchmark):
    name = "pope"
    hub_id = "lmms-lab/POPE"
    config = "default"
    split = "test"
    columns = ("question_id", "question", "answer", "image", "category")
    # lmms-eval allows 128; greedy decoding stops at the end of a one-word answer, and the reader
    # looks only at the first sentence, so a longer budget changes nothing but the time a rambling model takes
    max_new_tokens = 32
    reference = "lmms-eval tasks/pope (default prompt); precision/recall/F1/yes_ratio as LLaVA's eval_pope.py"

    def item(self, row: dict, images) -> Item:
        gold = row["answer"].strip().lower()
        if gold not in ("yes", "no"):
            raise SinkTrainError(f"pope: question {row['question_id']!r} has answer {row['answer']!r}; POPE's answers are 'yes' or 'no'")
        text = f"{row['question'].strip()}\n{SHORT_ANSWER}"
        return Item(str(row["question_id"]), text, images("image"), gold, row["category"])

    def judge(self, item: Item, response: str) -> Judged:
        answer = yes_no(response)
        return Judged(answer, answer == item.gold)

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        splits = sorted({item.group for item in items})
        rows = [confusion_row(split, [(i, j) for i, j in zip(items, judged) if i.group == split]) for split in splits]
        pooled = confusion_row("all", list(zip(items, judged)))
        headline = {"accuracy": pooled["accuracy"], "f1": pooled["f1"], "mean_split_f1": mean([row["f1"] for row in rows])}
        notes = [
            "positive class 'yes': TP = gold yes & answered yes, FP = gold no & answered yes, FN = gold yes & answered "
            "no or unparsed, TN = gold no & answered no; an unparsed answer is wrong and counts as 'not yes' "
            "(so it lowers recall when the gold is yes, and is in no cell when the gold is no)",
            "accuracy = (TP + TN) / n, precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R), "
            "yes_ratio = answered yes / n (LLaVA's eval_pope; lmms-eval's is the gold share, always 50); 0 when a denominator is 0",
            f"mean_split_f1: the mean F1 over the {len(rows)} split(s) present ({', '.join(splits)}), the LLaVA-1.5 paper's POPE number",
        ]
        return Scores(headline, {"per split": rows + [pooled]}, notes)


def confusion_row(label: str, pairs: Iterable[tuple[Item, Judged]]) -> dict:
    """One split's (or all rows') confusion counts and the metrics built from them, all in %."""
    pairs = list(pairs)
    said_yes = [verdict.parsed == "yes" for _, verdict in pairs]
    gold_yes = [item.gold == "yes" for item, _ in pairs]
    tp = sum(g and s for g, s in zip(gold_yes, said_yes))
    fp = sum(s and not g for g, s in zip(gold_yes, said_yes))
    fn = sum(g and not s for g, s in zip(gold_yes, said_yes))
    tn = sum(not g and verdict.parsed == "no" for g, (_, verdict) in zip(gold_yes, pairs))
    precision, recall = percent(tp, tp + fp), percent(tp, tp + fn)
    return {
        "split": label, "n": len(pairs), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "unparsed": sum(verdict.parsed is None for _, verdict in pairs),
        "accuracy": percent(sum(verdict.correct for _, verdict in pairs), len(pairs)),
        "precision": precision, "recall": recall, "f1": f1(precision, recall),
        "yes_ratio": percent(sum(said_yes), len(pairs)),
    }


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0
