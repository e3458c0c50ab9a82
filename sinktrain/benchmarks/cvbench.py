"""CV-Bench (Tong et al. 2024, "Cambrian-1"): 2638 vision-centric multiple-choice questions, 2D
tasks (Count, Relation) on ADE20K and COCO images and 3D tasks (Depth, Distance) on Omni3D; the
LSG paper's per-layer search runs on MMStar and CV-Bench, and reports OCRBench and MathVista too.

Data: ``nyu-visionx/CV-Bench``, config ``default``, split ``test``; ``prompt`` holds the question
and its "(A) x" option lines, ``choices`` the option texts, ``answer`` the letter as "(C)".

Prompt: the CV-Bench authors' own evaluation (Cambrian's ``--question_extension``), ``prompt``
then "Answer with the option's letter from the given choices directly." lmms-eval's default puts
"Note: You only need to respond with A, B, ... without providing any additional information."
and a blank line before ``prompt`` instead; we follow the benchmark's authors.

Answers are read with ``option_letter`` (a letter, "(B)", "The answer is B.", the option text):
lmms-eval takes the first letter of the response, so "The answer is (B)" reads as "T" and "Based
on ..." as "B"; ours reads the option the model named, and a response naming none is unparsed.

Reported: accuracy per task, per source and per type (2D/3D); the headline is the official
formula of the CV-Bench card, 2D = mean(accuracy on ADE20K, on COCO), 3D = accuracy on Omni3D,
overall = mean(2D, 3D), each over the sources present (a subset may lack one; a note says so),
and lmms-eval's number, plain accuracy over every question, as ``lmms_eval_accuracy``.
"""

from __future__ import annotations

from sinktrain.benchmarks.base import ANSWER_LETTER, Benchmark, Item, Judged, Scores, accuracy_rows, mean
from sinktrain.benchmarks.extract import option_letter

# The official formula's sources: 2D questions come from ADE20K and COCO, 3D ones from Omni3D.
SOURCES = {"2D": ("ADE20K", "COCO"), "3D": ("Omni3D",)}


class CVBench(Benchmark):
    name = "cvbench"
    hub_id = "nyu-visionx/CV-Bench"
    config = "default"
    split = "test"
    columns = ("idx", "type", "task", "image", "prompt", "choices", "answer", "source")
    max_new_tokens = 32
    reference = "CV-Bench authors' prompt (Cambrian eval); the CV-Bench card's 2D/3D/overall formula; lmms-eval tasks/cv_bench micro accuracy beside it"

    def item(self, row: dict, images) -> Item:
        text = f"{row['prompt'].strip()}\n{ANSWER_LETTER}"
        info = {"choices": list(row["choices"]), "source": row["source"], "type": row["type"]}
        return Item(str(row["idx"]), text, images("image"), row["answer"].strip().strip("()").upper(), row["task"], info)

    def judge(self, item: Item, response: str) -> Judged:
        letter = option_letter(response, item.info["choices"])
        return Judged(letter, letter == item.gold)

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        per_task = accuracy_rows(items, judged, "task")
        per_source = accuracy_rows(items, judged, "source", lambda item: item.info["source"])
        per_type = accuracy_rows(items, judged, "type", lambda item: item.info["type"])
        headline, notes = official_formula({row["source"]: row["accuracy"] for row in per_source[:-1]})
        headline["lmms_eval_accuracy"] = per_task[-1]["accuracy"]
        notes.append("lmms_eval_accuracy: plain accuracy over every question (what lmms-eval's cv_bench reports)")
        return Scores(headline, {"per task": per_task, "per source": per_source, "per type": per_type}, notes)


def official_formula(accuracy_by_source: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """{"overall", "2D", "3D"} by the CV-Bench card's formula over the sources present, and notes
    naming the sources a subset lacks (a side with none of its sources is left out)."""
    sides, notes = {}, [
        "overall = mean(2D, 3D); 2D = mean(accuracy on ADE20K, accuracy on COCO); 3D = accuracy on Omni3D (the CV-Bench card's formula)"
    ]
    for side, sources in SOURCES.items():
        present = [source for source in sources if source in accuracy_by_source]
        if present:
            sides[side] = mean([accuracy_by_source[source] for source in present])
        missing = [source for source in sources if source not in present]
        if missing:
            notes.append(f"no {', '.join(missing)} questions in this data: {side} is over {', '.join(present) or 'nothing (left out)'}")
    return {"overall": mean(list(sides.values())), **sides}, notes
