"""OCRBench (Liu et al. 2024): 1000 open questions on reading text in images, 10 question types
(six kinds of text recognition, scene-text, document and key-information VQA, handwritten maths);
the LSG paper's per-layer search runs on MMStar and CV-Bench, and reports OCRBench and MathVista too.

Data: ``echo840/OCRBench``, split ``test``; ``answer`` is a list of acceptable answers, ``dataset``
the source dataset ("HME100k" for handwritten maths), ``question_type`` the category. It has no id
column: an item's key is its row's position in the dataset (lmms-eval's doc_id too), so keys stay
the same under ``--limit``.

Prompt: lmms-eval's default, the question alone. Matching is OCRBench's (as lmms-eval at 75571cfe):
an answer is right when any gold answer is a substring of the response, both normalised. For
HME100k: stripped, newlines made spaces, every space removed, case kept (formulae are
case-sensitive). For the rest: fullwidth ASCII folded to ASCII, lower-cased, stripped, newlines made
spaces. An empty response is unparsed (wrong); reasoning blocks (``<think>``) are dropped first, so
that a model thinking aloud is not rewarded by substring matching.

Reported: correct answers per question type, "Text Recognition" (the sum of the six recognition
types) and the final score, the total correct (out of 1000 on the full set); headline ``score``,
``max_score`` (the samples evaluated) and ``score_per_1000`` (the score scaled to 1000, equal to it
on the full set). Counts are local to each scoring: lmms-eval keeps them in a module-level dict
that a second aggregation in one process adds to again.
"""

from __future__ import annotations

from sinktrain.benchmarks.base import Benchmark, Item, Judged, Scores, accuracy_row
from sinktrain.benchmarks.extract import clean

RECOGNITION = (
    "Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition",
    "Handwriting Recognition", "Digit String Recognition", "Non-Semantic Text Recognition",
)
OTHERS = ("Scene Text-centric VQA", "Doc-oriented VQA", "Key Information Extraction", "Handwritten Mathematical Expression Recognition")
MATHS_DATASET = "HME100k"
FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: ord(" ")}  # "ＡＢ１" -> "AB1"


def normalised(text: str, dataset: str) -> str:
    """A response or gold answer as OCRBench compares them (see the module docstring)."""
    if dataset == MATHS_DATASET:
        return text.strip().replace("\n", " ").replace(" ", "")
    return text.translate(FULLWIDTH).lower().strip().replace("\n", " ")


class OCRBench(Benchmark):
    name = "ocrbench"
    hub_id = "echo840/OCRBench"
    split = "test"
    columns = ("dataset", "question", "question_type", "answer", "image")
    max_new_tokens = 128  # lmms-eval's: some answers are whole lines of a document
    reference = "lmms-eval tasks/ocrbench at 75571cfe (prompt, matching and the score out of 1000)"

    def item(self, row: dict, images) -> Item:
        row_images = images("image")
        answers = [row["answer"]] if isinstance(row["answer"], str) else list(row["answer"])  # a lone string is one answer, not letters
        return Item("", row["question"].strip(), row_images, answers, row["question_type"], {"dataset": row["dataset"]})

    def judge(self, item: Item, response: str) -> Judged:
        dataset = item.info["dataset"]
        said = normalised(clean(response), dataset)
        if not said:
            return Judged(None, False)
        golds = [normalised(str(gold), dataset) for gold in item.gold]
        return Judged(said, any(gold and gold in said for gold in golds))  # an empty gold would match anything

    def scores(self, items: list[Item], judged: list[Judged]) -> Scores:
        by_type: dict[str, list[Judged]] = {}
        for item, verdict in zip(items, judged):
            by_type.setdefault(item.group, []).append(verdict)
        rows = [accuracy_row("question type", name, by_type[name]) for name in RECOGNITION if name in by_type]
        recognised = [verdict for name in RECOGNITION for verdict in by_type.get(name, [])]
        rows += [accuracy_row("question type", "Text Recognition", recognised)] if recognised else []
        unknown = sorted(set(by_type) - set(RECOGNITION) - set(OTHERS))  # not OCRBench's ten: shown, still scored
        rows += [accuracy_row("question type", name, by_type[name]) for name in [*OTHERS, *unknown] if name in by_type]
        rows.append(accuracy_row("question type", "Final Score", judged))
        score = sum(verdict.correct for verdict in judged)
        headline = {"score": score, "max_score": len(judged), "score_per_1000": 1000 * score / len(judged) if judged else 0.0}
        notes = [
            "score: correct answers (OCRBench's final score, out of 1000 on the full set); score_per_1000 scales it to 1000 for a subset",
            "Text Recognition: the six recognition types together; correct: a gold answer is inside the normalised response",
        ]
        return Scores(headline, {"per question type": rows}, notes)
