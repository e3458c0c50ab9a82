"""ScienceQA-IMG (Lu et al. 2022): the 2017 test questions of ScienceQA that come with an image,
multiple choice with 2-5 options over natural, social and language science, grades 1-12; DIYSink
reports it.

Data: ``lmms-lab/ScienceQA``, config ``ScienceQA-IMG`` (the image-only filtering is the config's),
split ``test``; ``choices`` is the option list and ``answer`` a 0-based index into it (the gold is
its letter), ``hint`` the context or "". The dataset has no id column: an item's key is the row's
position in the split, as lmms-eval's doc_id. Prompt: lmms-eval's default, "Context: {hint}\\n"
when there is one, the question, "A. x\\nB. y" and "Answer with the option's letter from the given
choices directly." Reported: accuracy overall (lmms-eval's exact_match), per subject and per grade.

Departure: lmms-eval counts a response right only when it is the letter or "B." followed by text,
so "(B)", "B)" and "The answer is B." score 0 there; we read those and the option's text too
(``extract.option_letter``), so a model that answers in another style is not scored as wrong.
For the short letters LLaVA-style models give to this prompt both read the same.
"""

from __future__ import annotations

import re

from sinktrain.benchmarks.base import ANSWER_LETTER, Benchmark, Item, Judged, Scores, accuracy_rows, lettered
from sinktrain.benchmarks.extract import option_letter


def prompt(question: str, choices: list[str], hint: str) -> str:
    context = f"Context: {hint}\n" if hint else ""
    return f"{context}{question}\n{lettered(choices)}\n{ANSWER_LETTER}"


def grade_order(row: dict) -> int:
    """"grade2" before "grade10" (the table is sorted by text otherwise)."""
    digits = re.findall(r"\d+", row["grade"])
    return int(digits[0]) if digits else 0


class ScienceQAImg(Benchmark):
    name = "scienceqa_img"
    hub_id = "lmms-lab/ScienceQA"
    config = "ScienceQA-IMG"
    split = "test"
    columns = ("image", "question", "choices", "answer", "hint", "subject", "grade")
    max_new_tokens = 16
    reference = "lmms-eval tasks/scienceqa scienceqa_img (default prompt, exact_match accuracy)"

    def item(self, row: dict, images) -> Item:
        choices = list(row["choices"])
        image = images("image")
        gold = chr(65 + int(row["answer"]))
        info = {"options": choices, "grade": row["grade"]}
        return Item("", prompt(row["question"], choices, row["hint"] or ""), image, gold, row["subject"], info)

    def judge(self, item: Item, response: str) -> Judged:
        letter = option_letter(response, item.info["options"])
        return Judged(letter, letter == item.gold)

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        per_subject = accuracy_rows(items, judged, "subject")
        per_grade = accuracy_rows(items, judged, "grade", lambda item: item.info["grade"])
        per_grade = sorted(per_grade[:-1], key=grade_order) + per_grade[-1:]
        notes = [
            "accuracy: correct / all questions (lmms-eval's exact_match mean)",
            "answers read as a letter, '(B)', 'B. text', 'The answer is B.' or the option's text; lmms-eval accepts only 'B' and 'B.'",
        ]
        return Scores({"accuracy": per_subject[-1]["accuracy"]}, {"per subject": per_subject, "per grade": per_grade}, notes)
