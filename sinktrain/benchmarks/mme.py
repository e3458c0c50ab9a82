"""MME (Fu et al. 2023): yes/no questions in 14 categories, 10 of perception (existence, count,
OCR, ...) and 4 of cognition (commonsense, numbers, translation, code); every image has two
questions, one answered yes and one no. DIYSink reports it.

Data: ``lmms-lab/MME`` (the same files are at ``lmms-lab-encoder/MME``), config ``default``, split
``test``, 2374 rows; ``question_id`` is the image's path and is shared by its two questions,
``answer`` is "Yes"/"No". Prompt: lmms-eval's default, the question without its " Please answer yes
or no." (only that exact text is removed), then "Answer the question using a single word or phrase."

Reported, per category: acc (% of questions right), acc+ (% of images, by question_id within the
category, whose questions are all right) and score = acc + acc+ (max 200); headline: perception
(the sum of its 10 category scores, max 2000), cognition (the sum of its 4, max 800) and their total.
A category missing from the data adds nothing (the notes say how many were present); an image cut
to one question (--limit) needs only that one right for acc+. Departure from lmms-eval, which reads
yes/no only in the first 4 characters ("There is no dog." is "other", wrong, there): answers are
read with ``extract.yes_no``, which takes "There is no dog." as no and does not read a bare "y"/"n".
"""

from __future__ import annotations

from sinktrain.benchmarks.base import SHORT_ANSWER, Benchmark, Item, Judged, Scores, percent
from sinktrain.benchmarks.extract import yes_no
from sinktrain.errors import SinkTrainError

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
PARTS = {"perception": PERCEPTION, "cognition": COGNITION}
ASKS_YES_NO = " Please answer yes or no."  # every MME question ends with it; our prompt asks for a short answer instead


class MME(Benchmark):
    name = "mme"
    hub_id = "lmms-lab/MME"
    config = "default"
    split = "test"
    columns = ("question_id", "image", "question", "answer", "category")
    max_new_tokens = 16  # lmms-eval's
    reference = "lmms-eval tasks/mme (default prompt); scores as the MME paper (acc + acc+ per category, summed)"
    keys_repeat = True  # question_id is the image: its two questions become "id#1", "id#2"

    def item(self, row: dict, images) -> Item:
        image_id = str(row["question_id"])
        gold = row["answer"].strip().lower().replace(".", "")
        if gold not in ("yes", "no"):
            raise SinkTrainError(f"mme: {image_id!r} has answer {row['answer']!r}; MME's answers are 'Yes' or 'No'")
        text = f"{row['question'].replace(ASKS_YES_NO, '')}\n{SHORT_ANSWER}"
        return Item(image_id, text, images("image"), gold, row["category"], {"question_id": image_id})

    def judge(self, item: Item, response: str) -> Judged:
        answer = yes_no(response)
        return Judged(answer, answer == item.gold)

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        by_category: dict[str, list[tuple[Item, Judged]]] = {}
        for item, verdict in zip(items, judged):
            by_category.setdefault(item.group, []).append((item, verdict))
        rows = [category_row(name, by_category[name]) for name in in_mme_order(by_category)]
        parts = [part_row(part, names, rows) for part, names in PARTS.items()]
        headline = {part["part"]: part["score"] for part in parts}
        headline["total"] = headline["perception"] + headline["cognition"]
        return Scores(headline, {"per category": rows, "perception and cognition": parts}, notes_for(rows, parts))


def in_mme_order(categories) -> list[str]:
    """Perception's categories, then cognition's, in the MME paper's order; unknown names last."""
    known = [name for name in PERCEPTION + COGNITION if name in categories]
    return known + sorted(name for name in categories if name not in PERCEPTION + COGNITION)


def part_of(category: str) -> str:
    return next((part for part, names in PARTS.items() if category in names), "neither")


def category_row(category: str, pairs: list[tuple[Item, Judged]]) -> dict:
    """acc over questions, acc+ over images (question_id, grouped within this category only), score = acc + acc+."""
    all_right: dict[str, bool] = {}
    questions: dict[str, int] = {}
    for item, verdict in pairs:
        image_id = item.info["question_id"]
        all_right[image_id] = all_right.get(image_id, True) and verdict.correct
        questions[image_id] = questions.get(image_id, 0) + 1
    correct = sum(verdict.correct for _, verdict in pairs)
    acc, acc_plus = percent(correct, len(pairs)), percent(sum(all_right.values()), len(all_right))
    return {
        "category": category, "part": part_of(category), "questions": len(pairs), "images": len(all_right),
        "one_question_images": sum(count == 1 for count in questions.values()), "correct": correct,
        "unparsed": sum(verdict.parsed is None for _, verdict in pairs), "acc": acc, "acc+": acc_plus, "score": acc + acc_plus,
    }


def part_row(part: str, names: tuple[str, ...], rows: list[dict]) -> dict:
    present = [row for row in rows if row["category"] in names]
    return {"part": part, "categories": f"{len(present)} of {len(names)}", "score": sum(row["score"] for row in present), "max": 200 * len(names)}


def notes_for(rows: list[dict], parts: list[dict]) -> list[str]:
    notes = [
        "score = acc + acc+ per category (max 200): acc = % of questions right, acc+ = % of images (question_id, "
        "within the category) with every question right; perception = the sum of its 10 categories' scores (max "
        "2000), cognition of its 4 (max 800), total = both; an unparsed answer is wrong",
        "categories present: " + ", ".join(f"{part['part']} {part['categories']}" for part in parts)
        + "; a missing category adds nothing to its sum",
    ]
    unknown = [row["category"] for row in rows if row["part"] == "neither"]
    if unknown:
        notes.append(f"not MME categories, shown above but in neither sum: {', '.join(unknown)}")
    cut = sum(row["one_question_images"] for row in rows)
    if cut:
        notes.append(f"{cut} image(s) have only one of their questions here (e.g. cut by --limit): acc+ counts them right when that one is")
    return notes
