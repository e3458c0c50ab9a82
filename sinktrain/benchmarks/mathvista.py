"""MathVista testmini (Lu et al. 2024): 1000 maths questions on images (figures, plots, geometry,
tables, scenes), multiple-choice or free-form with integer, float or list answers; the LSG paper's
per-layer search runs on MMStar and CV-Bench, and reports OCRBench and MathVista too.

Data: ``AI4Math/MathVista``, split ``testmini`` (the test split's answers are hidden). The image
is ``decoded_image``; ``image`` is only its path, a text column. ``choices`` is None for free-form
questions, ``precision`` (decimal places of a float answer) is a float64 or None, ``metadata``
holds task, skills (a list), category, context, grade, language and source.

Prompt: lmms-eval's ``mathvista_testmini_format`` (shot_type "format-prompt", zero-shot): the
question (with " (Unit: u)" when it has a unit), the choices as "A. x" lines for multiple choice,
and a hint on the answer's form, joined by newlines. Hints exist there for floats with one or two
decimal places only (another precision breaks it); we say "{n} decimal places" for any other.

Answers are read by rules: lmms-eval (like the official MathVista code) asks GPT to extract the
answer, and a failed call yields "", which becomes the shortest choice or no number, silently
wrong. Here: multiple choice, the option named by letter or by its text (``option_letter``), as its
choice text (no nearest-choice guess); integer, the last number as an int; float, the last number
rounded to ``int(precision)`` places (Python's round rejects the float64 2.0, which makes lmms-eval
mark every float answer wrong); list, the last Python list. Nothing readable is unparsed (wrong).
Right when the answer read equals ``answer`` as text (both stripped), as in lmms-eval.

Reported: accuracy overall (the headline), per task (metadata), per question type, per answer
type, per skill (a question counts under each of its skills), and per category, context, grade,
language and source, the breakdowns lmms-eval writes.
"""

from __future__ import annotations

from sinktrain.benchmarks.base import ANSWER_LETTER, Benchmark, Item, Judged, Scores, accuracy_rows, lettered
from sinktrain.benchmarks.extract import clean, last_list, last_number, option_letter

PLACES = {1: "one decimal place", 2: "two decimal places"}
HINTS = {
    "integer": "Answer the question using a single integer number.",
    "float": "Answer the question using a single floating-point number with {places}.",
    "list": "Answer the question using a Python list.",
}
METADATA_BREAKDOWNS = ("category", "context", "grade", "language", "source")


def decimals(precision: float | None) -> int | None:
    """``precision`` as a number of places: it is stored as a float64 (2.0), which round() rejects."""
    return None if precision is None else int(precision)


def hint(question_type: str, answer_type: str, places: int | None) -> str:
    if question_type == "multi_choice":
        return ANSWER_LETTER
    if answer_type == "float" and places is None:
        return "Answer the question using a single floating-point number."  # no precision given: no places asked
    return HINTS.get(answer_type, "").format(places=PLACES.get(places, f"{places} decimal places"))


def prompt(row: dict, places: int | None) -> str:
    question = f"{row['question']} (Unit: {row['unit']})" if row["unit"] else row["question"]
    choices = lettered(list(row["choices"] or [])) if row["question_type"] == "multi_choice" else ""
    return "\n".join(part for part in (question, choices, hint(row["question_type"], row["answer_type"], places)) if part)


def read_answer(info: dict, response: str) -> str | None:
    """The answer in the form MathVista compares: a choice's text, "3", "3.14", "[1, 2]"; None when
    the response holds none."""
    if info["question_type"] == "multi_choice":
        letter = option_letter(response, info["choices"])
        return info["choices"][ord(letter) - ord("A")] if letter else None
    if info["answer_type"] == "list":
        found = last_list(response)
        return None if found is None else str(found)
    if info["answer_type"] in ("integer", "float"):
        number = last_number(response)
        if number is None:
            return None
        if info["answer_type"] == "integer":
            return str(int(number))
        return str(number) if info["places"] is None else str(round(number, info["places"]))
    return clean(response) or None  # free-form text: the response itself


class MathVista(Benchmark):
    name = "mathvista"
    hub_id = "AI4Math/MathVista"
    split = "testmini"
    columns = ("pid", "question", "decoded_image", "choices", "unit", "precision", "answer", "question_type", "answer_type", "metadata")
    image_columns = ("decoded_image",)  # ``image`` is the image's path, a text column
    max_new_tokens = 32
    reference = "lmms-eval tasks/mathvista mathvista_testmini_format at 75571cfe (prompt, normalisation, exact match); rule-based extraction instead of GPT"

    def item(self, row: dict, images) -> Item:
        places = decimals(row["precision"])
        metadata = row["metadata"]
        info = {
            "question_type": row["question_type"], "answer_type": row["answer_type"], "places": places,
            "choices": list(row["choices"] or []), "skills": list(metadata["skills"] or []),
            **{field: metadata[field] for field in METADATA_BREAKDOWNS},
        }
        return Item(str(row["pid"]), prompt(row, places), images("decoded_image"), str(row["answer"]), metadata["task"], info)

    def judge(self, item: Item, response: str) -> Judged:
        parsed = read_answer(item.info, response)
        return Judged(parsed, parsed is not None and parsed.strip() == item.gold.strip())

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        tables = {
            "per task": accuracy_rows(items, judged, "task"),
            "per question type": accuracy_rows(items, judged, "question type", lambda item: item.info["question_type"]),
            "per answer type": accuracy_rows(items, judged, "answer type", lambda item: item.info["answer_type"]),
            "per skill": accuracy_rows(items, judged, "skill", lambda item: item.info["skills"]),
        }
        for field in METADATA_BREAKDOWNS:
            tables[f"per {field}"] = accuracy_rows(items, judged, field, lambda item, field=field: item.info[field])
        notes = [
            "accuracy: the answer read equals the gold answer as text (a float rounded to the question's precision first)",
            "per skill: a question counts under each of its skills, so the skill rows add up to more than the questions",
            "answers read by rules (letter or option text, last number, last list), not by GPT as in lmms-eval",
        ]
        return Scores({"accuracy": tables["per task"][-1]["accuracy"]}, tables, notes)
