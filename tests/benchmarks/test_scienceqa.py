"""ScienceQA-IMG: the loader reads its public schema (config ScienceQA-IMG), the prompt is
lmms-eval's, answers in every style are read, and accuracy overall / per subject / per grade match
hand counts."""

import pytest
from datasets import Features, Image, Sequence, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import as_sample, build_items, score_responses
from sinktrain.errors import SinkTrainError

TEXT_COLUMNS = ("question", "hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution")
FEATURES = Features({
    "image": Image(), "choices": Sequence(Value("string")), "answer": Value("int8"),
    **{column: Value("string") for column in TEXT_COLUMNS},
})
NATURAL, SOCIAL, LANGUAGE = "natural science", "social science", "language science"


def row(index: int, question: str, choices: list[str], answer: int, subject: str, grade: str, hint: str = "") -> dict:
    text = {column: f"{column} {index}" for column in TEXT_COLUMNS}
    text.update(question=question, hint=hint, subject=subject, grade=grade)
    return {"image": picture(index), "choices": choices, "answer": answer, **text}


ROWS = [
    row(0, "Which rock formed from lava?", ["sandstone", "granite"], 1, NATURAL, "grade2", hint="Granite cools from magma."),
    row(1, "Which state of matter is steam?", ["solid", "liquid", "gas"], 2, NATURAL, "grade10"),
    row(2, "Which state is highlighted?", ["Texas", "Ohio", "Utah", "Maine"], 0, SOCIAL, "grade3"),
    row(3, "Is this a map of a continent?", ["yes", "no"], 1, SOCIAL, "grade2"),
    row(4, "Which figure of speech is used?", ["a simile", "a metaphor"], 0, LANGUAGE, "grade10"),
    row(5, "Which is a compound sentence?", ["compound sentence", "simple sentence"], 1, LANGUAGE, "grade3"),
]
# Styles models produce; 0, 1, 3 and 4 right, 2 a wrong letter, 5 unreadable.
RESPONSES = ["B", "(C)", "B. Ohio", "The answer is B.", "a simile", "Hmm, hard to say"]


def load(tmp_path, rows=ROWS, features=FEATURES):
    bench = get_benchmark("scienceqa_img")
    path = write_hub_dataset(tmp_path / "ScienceQA", {"test": rows}, features, config="ScienceQA-IMG")
    return bench, build_items(bench, load_rows(bench, str(path)))


def test_reads_the_public_schema_and_asks_lmms_evals_prompt(tmp_path):
    bench, items = load(tmp_path)
    assert [item.key for item in items] == [str(i) for i in range(6)]  # the row's position: no id column
    assert items[0].text == (
        "Context: Granite cools from magma.\nWhich rock formed from lava?\nA. sandstone\nB. granite\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert items[1].text == (
        "Which state of matter is steam?\nA. solid\nB. liquid\nC. gas\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert [item.gold for item in items] == ["B", "C", "A", "B", "A", "B"]  # the letter of the 0-based index
    assert [item.group for item in items] == [NATURAL, NATURAL, SOCIAL, SOCIAL, LANGUAGE, LANGUAGE]
    image = items[3].images[0]
    assert len(items[3].images) == 1 and image.mode == "RGB" and image.size == picture(3).size
    assert image.getpixel((0, 0)) == picture(3).getpixel((0, 0))
    assert as_sample(items[0]).question[0]["value"].startswith("<image>\nContext: Granite")


def test_reads_every_answer_style_and_counts_unreadable_as_wrong(tmp_path):
    bench, items = load(tmp_path)
    run = score_responses(bench, items, RESPONSES)
    assert [j.parsed for j in run.judged] == ["B", "C", "B", "B", "A", None]
    assert [j.correct for j in run.judged] == [True, True, False, True, True, False]
    assert run.unparsed == 1


def test_accuracy_overall_per_subject_and_per_grade_by_hand(tmp_path):
    bench, items = load(tmp_path)
    scores = score_responses(bench, items, RESPONSES).scores
    assert scores.headline == {"accuracy": 100 * 4 / 6}
    per_subject = {r["subject"]: (r["n"], r["correct"], r["unparsed"], r["accuracy"]) for r in scores.tables["per subject"]}
    assert per_subject == {
        LANGUAGE: (2, 1, 1, 50.0), NATURAL: (2, 2, 0, 100.0), SOCIAL: (2, 1, 0, 50.0), "all": (6, 4, 1, 100 * 4 / 6),
    }
    # grades in school order, not text order ("grade10" after "grade3")
    per_grade = [(r["grade"], r["correct"], r["accuracy"]) for r in scores.tables["per grade"]]
    assert per_grade == [("grade2", 2, 100.0), ("grade3", 0, 0.0), ("grade10", 2, 100.0), ("all", 4, 100 * 4 / 6)]


def test_a_copy_without_a_required_column_is_refused_naming_it(tmp_path):
    features = Features({name: feature for name, feature in FEATURES.items() if name != "hint"})
    rows = [{name: value for name, value in r.items() if name != "hint"} for r in ROWS]
    path = write_hub_dataset(tmp_path / "ScienceQA-no-hint", {"test": rows}, features, config="ScienceQA-IMG")
    with pytest.raises(SinkTrainError, match="'hint'"):
        load_rows(get_benchmark("scienceqa_img"), str(path))
