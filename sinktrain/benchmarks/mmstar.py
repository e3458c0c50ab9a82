"""MMStar (Chen et al. 2024): 1500 vision-indispensable multiple-choice questions, 6 core
capabilities x 3 sub-capabilities; the LSG paper's per-layer search reports its 6 categories.

Data: ``Lin-Chen/MMStar``, split ``val``; the options are inside ``question`` ("Options: A: x, B:
y, ..."), ``answer`` is the letter. Prompt: lmms-eval's default, the question then "Answer with the
option's letter from the given choices directly" (no final period there). Reported: accuracy per
category and per l2 category, overall accuracy (what the MMStar paper and VLMEvalKit report) and
lmms-eval's "average" (the mean of the 18 l2-category accuracies) beside it.
"""

from __future__ import annotations

import re

from sinktrain.benchmarks.base import ANSWER_LETTER, Benchmark, Item, Judged, Scores, accuracy_rows, mean
from sinktrain.benchmarks.extract import option_letter

INLINE_OPTIONS = re.compile(r"(?:^|,\s*|\n)([A-F]): ")
LINE_OPTIONS = re.compile(r"^\(([A-F])\)\s*(.*)$", re.M)


def options_in(question: str) -> list[str]:
    """The option texts of an MMStar question ("Options: A: x, B: y" or "(A) x" lines), or 4
    empty ones when they cannot be read (then only letters are matched)."""
    if "Options:" in question:
        tail = question.rsplit("Options:", 1)[1].strip()
        parts = INLINE_OPTIONS.split(tail)[1:]  # [letter, text, letter, text, ...]
        options = [text.strip() for text in parts[1::2]]
        if options and parts[0::2] == [chr(65 + i) for i in range(len(options))]:
            return options
    lines = LINE_OPTIONS.findall(question)
    if lines and [letter for letter, _ in lines] == [chr(65 + i) for i in range(len(lines))]:
        return [text.strip() for _, text in lines]
    return [""] * 4


class MMStar(Benchmark):
    name = "mmstar"
    hub_id = "Lin-Chen/MMStar"
    split = "val"
    columns = ("index", "question", "image", "answer", "category", "l2_category")
    max_new_tokens = 32
    reference = "lmms-eval tasks/mmstar (default prompt); accuracy as in the MMStar paper"

    def item(self, row: dict, images) -> Item:
        question = row["question"].strip()
        text = f"{question}\n{ANSWER_LETTER[:-1]}"  # lmms-eval's MMStar prompt has no final period
        info = {"l2_category": row["l2_category"], "options": options_in(question)}
        return Item(str(row["index"]), text, images("image"), row["answer"].strip().upper(), row["category"], info)

    def judge(self, item: Item, response: str) -> Judged:
        letter = option_letter(response, item.info["options"])
        return Judged(letter, letter == item.gold)

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        per_category = accuracy_rows(items, judged, "category")
        per_l2 = accuracy_rows(items, judged, "l2 category", lambda item: item.info["l2_category"])
        headline = {"accuracy": per_category[-1]["accuracy"], "lmms_eval_average": mean([row["accuracy"] for row in per_l2[:-1]])}
        notes = ["lmms_eval_average: the mean of the l2-category accuracies (lmms-eval's MMStar 'average')"]
        return Scores(headline, {"per category": per_category, "per l2 category": per_l2}, notes)
