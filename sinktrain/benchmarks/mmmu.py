"""MMMU (Yue et al. 2024): 900 college-level validation questions over 30 subjects in 6
disciplines, mostly multiple choice, about 5% open; up to 7 images each. DIYSink reports it.

Data: ``lmms-lab/MMMU`` (the 30 subject configs of ``MMMU/MMMU`` in one), split ``validation``;
``options`` is a string holding a Python list ("[]" for open questions), ``image_1``..``image_7``
are null where unused, the subject is in ``id`` ("validation_Art_Theory_12" -> Art_Theory).
Prompt: lmms-eval's default, "{question}\\n{A. x\\nB. y}\\n\\nAnswer with the option's letter from
the given choices directly." or "{question}\\n\\nAnswer the question using a single word or phrase.";
the ``<image n>`` tokens stay in the text and the images they name (question and options, each
once, by n) come first. Reported: accuracy per subject, per discipline (pooled over its
subjects' questions) and overall (micro, over all questions).

Multiple choice is read with ``extract.option_letter`` (a letter, "(B)", "B. text", "The answer is
B", the option's text), not the official parser's rules; a response that names no option is wrong
and counted as unparsed. The official MMMU evaluation and lmms-eval pick a random option instead;
``accuracy_with_random_guess`` is that protocol's number, the guess seeded by the question id
(``random.Random(id)``), so it is reproducible (lmms-eval's depends on the order of its global
random stream). Open questions follow the official evaluation: every answer phrase and number of
the response is a candidate (numbers rounded to 2 decimals, text lower case) and one matching the
gold (a number equal, a text containing it) is right. lmms-eval at 75571cfe kept only the first
candidate as a string and matched it character by character, so it scored nearly every open
question wrong (its issue #1436, fixed by PR #1471); we do not. A gold written as a list
("['24/7', '3.43']") accepts any of its entries (read as one text it could never match).
"""

from __future__ import annotations

import ast
import math
import random
import re

from sinktrain.benchmarks.base import ANSWER_LETTER, SHORT_ANSWER, Benchmark, Item, Judged, Scores, accuracy_rows, lettered, percent
from sinktrain.benchmarks.extract import NUMBER, clean, letters_for, option_letter
from sinktrain.errors import SinkTrainError

IMAGE_COLUMNS = tuple(f"image_{n}" for n in range(1, 8))
IMAGE_REFERENCE = re.compile(r"<image (\d+)>")
SUBJECT = re.compile(r"^[A-Za-z]+_(.+?)_\d+$")  # "validation_Art_Theory_12" -> "Art_Theory"
DISCIPLINES = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy", "Public_Health"),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": (
        "Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics", "Energy_and_Power", "Materials",
        "Mechanical_Engineering",
    ),
}
DISCIPLINE_OF = {subject: discipline for discipline, subjects in DISCIPLINES.items() for subject in subjects}
MULTIPLE_CHOICE = "multiple-choice"
# Open answers: the text after one of these (the shortest such tail per line) is the answer phrase.
INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
TRIVIAL = set(":,.!?;'")
SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")


def subject_of(question_id: str) -> str:
    found = SUBJECT.match(question_id)
    return found.group(1) if found else "unknown"


def options_of(row: dict) -> list[str]:
    try:
        options = ast.literal_eval(row["options"])
    except (ValueError, SyntaxError):
        options = None
    if not isinstance(options, list):
        raise SinkTrainError(f"mmmu {row['id']}: options {row['options']!r} is not a list's text, as in lmms-lab/MMMU")
    return [str(option) for option in options]


def referenced_images(text: str) -> list[str]:
    """The image columns a prompt names, each once, by number (``<image 8>`` and up do not exist)."""
    numbers = sorted({int(n) for n in IMAGE_REFERENCE.findall(text)})
    return [f"image_{n}" for n in numbers if 1 <= n <= len(IMAGE_COLUMNS)]


def gold_answers(answer: str) -> list[str]:
    """An open question's accepted answers: the answer, or the entries of an answer written as a list."""
    if answer.strip().startswith("["):
        try:
            value = ast.literal_eval(answer.strip())
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list):
            return [str(entry) for entry in value]
    return [answer]


def normalised(text: str) -> list:
    """One answer as the official evaluation compares it: a number rounded to 2 decimals, else
    lower-case text; a single character also matches with a space on either side."""
    text = text.strip()
    try:
        number = float(text.replace(",", ""))
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return [round(number, 2)]
    text = text.lower()
    return [f" {text}", f"{text} "] if len(text) == 1 else [text]


def answer_phrases(text: str) -> list[str]:
    """Per line, the shortest text after an indicator ("the answer is 5" -> "5"; "=" too on the
    last line); the whole response when no line has one. Lines only: the official sentence split
    needs capitals and runs after lower-casing, so it never splits."""
    lines = text.split("\n")
    phrases = []
    for number, line in enumerate(lines):
        indicators = INDICATORS + ("=",) if number == len(lines) - 1 else INDICATORS
        tails = [line.split(indicator)[-1].strip() for indicator in indicators if indicator in line]
        shortest = min((tail for tail in tails if tail), key=len, default="")
        if shortest and shortest not in TRIVIAL:
            phrases.append(shortest)
    return phrases or [text]


def open_candidates(response: str) -> list:
    """Every answer an open response may give: its phrases and the numbers in them, normalised."""
    text = clean(response).strip(" \t\n.").lower()
    if not text:
        return []
    phrases = answer_phrases(text)
    numbers = [n for phrase in phrases for n in SCIENTIFIC.findall(phrase) + NUMBER.findall(SCIENTIFIC.sub(" ", phrase))]
    return list(dict.fromkeys(value for phrase in phrases + numbers for value in normalised(phrase)))


def open_correct(candidates: list, golds: list[str]) -> bool:
    accepted = [value for gold in golds for value in normalised(gold) if value != ""]
    texts = [value for value in accepted if isinstance(value, str)]
    return any(
        any(text in candidate for text in texts) if isinstance(candidate, str) else candidate in accepted
        for candidate in candidates
    )


def random_guess(item: Item) -> str:
    """The MMMU protocol's option for an unreadable answer, seeded by the question id."""
    return random.Random(item.key).choice(letters_for(item.info["options"]))


class MMMU(Benchmark):
    name = "mmmu"
    hub_id = "lmms-lab/MMMU"
    split = "validation"
    columns = ("id", "question", "options", "answer", "question_type", *IMAGE_COLUMNS)
    image_columns = IMAGE_COLUMNS
    max_new_tokens = 128
    reference = "lmms-eval tasks/mmmu mmmu_val (default prompt); the official MMMU evaluation's matching and metric"

    def item(self, row: dict, images) -> Item:
        options = options_of(row)
        question, multiple_choice = row["question"], row["question_type"] == MULTIPLE_CHOICE
        text = f"{question}\n{lettered(options)}\n\n{ANSWER_LETTER}" if multiple_choice else f"{question}\n\n{SHORT_ANSWER}"
        shown = images(*referenced_images(f"{question}\n{lettered(options)}"))
        subject = subject_of(row["id"])
        info = {"options": options, "question_type": row["question_type"], "discipline": DISCIPLINE_OF.get(subject, "unknown")}
        answer = row["answer"].strip() if multiple_choice else row["answer"]
        return Item(row["id"], text, shown, answer, subject, info)

    def judge(self, item: Item, response: str) -> Judged:
        if item.info["question_type"] == MULTIPLE_CHOICE:
            letter = option_letter(response, item.info["options"])
            return Judged(letter, letter == item.gold)
        candidates = open_candidates(response)
        if not candidates:
            return Judged(None, False)
        return Judged(candidates, open_correct(candidates, gold_answers(item.gold)))

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        per_subject = accuracy_rows(items, judged, "subject")
        per_discipline = accuracy_rows(items, judged, "discipline", lambda item: item.info["discipline"])
        per_type = accuracy_rows(items, judged, "question type", lambda item: item.info["question_type"])
        headline = {"accuracy": per_subject[-1]["accuracy"], "accuracy_with_random_guess": with_random_guess(items, judged)}
        notes = [
            "accuracy: correct / all questions; a discipline's accuracy pools its subjects' questions",
            "accuracy_with_random_guess: an unreadable multiple-choice answer replaced by random.Random(id).choice of its "
            "letters (the official MMMU protocol's random pick, made reproducible)",
            "open questions: right when any number or answer phrase of the response matches the gold (official MMMU; "
            "lmms-eval at 75571cfe scored them character by character, issue #1436)",
        ]
        return Scores(headline, {"per discipline": per_discipline, "per subject": per_subject, "per question type": per_type}, notes)


def with_random_guess(items: list[Item], judged: list[Judged]) -> float:
    hits = sum(
        verdict.correct or guessable(item, verdict) and random_guess(item) == item.gold
        for item, verdict in zip(items, judged)
    )
    return percent(hits, len(items))


def guessable(item: Item, verdict: Judged) -> bool:
    return verdict.parsed is None and item.info["question_type"] == MULTIPLE_CHOICE and bool(item.info["options"])
