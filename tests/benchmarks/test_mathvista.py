"""MathVista testmini: the loader reads its public schema (the image in ``decoded_image``, ``image``
a path, ``precision`` a float64), the prompt is lmms-eval's format prompt, answers are read by rules
(letters, option text, last number rounded to an int precision, last list) and accuracy per task,
question type, answer type and skill matches hand counts."""

import pytest
from datasets import Features, Image, Sequence, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import build_items, score_responses
from sinktrain.errors import SinkTrainError

FEATURES = Features({
    "pid": Value("string"), "question": Value("string"), "image": Value("string"), "decoded_image": Image(),
    "choices": Sequence(Value("string")), "unit": Value("string"), "precision": Value("float64"), "answer": Value("string"),
    "question_type": Value("string"), "answer_type": Value("string"),
    "metadata": {
        "category": Value("string"), "context": Value("string"), "grade": Value("string"), "img_height": Value("int64"),
        "img_width": Value("int64"), "language": Value("string"), "skills": Sequence(Value("string")), "source": Value("string"),
        "split": Value("string"), "task": Value("string"),
    },
    "query": Value("string"),
})
FQA, GPS, MWP = "figure question answering", "geometry problem solving", "math word problem"


def row(pid: int, task: str, skills: list[str], question: str, answer: str, answer_type: str, choices=None, unit=None, precision=None) -> dict:
    metadata = {
        "category": "math-targeted-vqa", "context": "synthetic scene", "grade": "elementary school", "img_height": 40,
        "img_width": 40, "language": "english", "skills": skills, "source": "FigureQA", "split": "testmini", "task": task,
    }
    return {
        "pid": str(pid), "question": question, "image": f"images/{pid}.jpg", "decoded_image": picture(pid), "choices": choices,
        "unit": unit, "precision": precision, "answer": answer, "question_type": "multi_choice" if choices else "free_form",
        "answer_type": answer_type, "metadata": metadata, "query": f"Hint: ...\nQuestion: {question}",
    }


LOGIC, ARITH, GEOM, ALGEBRA, STATS = "logical reasoning", "arithmetic reasoning", "geometry reasoning", "algebraic reasoning", "statistical reasoning"
ROWS = [
    row(1, FQA, [LOGIC], "Which shape is shown?", "square", "text", ["triangle", "square", "circle"]),
    row(2, FQA, [LOGIC], "Which bar is tallest?", "green", "text", ["red", "blue", "green", "yellow"]),
    row(3, FQA, [ARITH, GEOM], "How long is the side?", "12 cm", "text", ["10 cm", "12 cm"]),
    row(4, GPS, [GEOM], "How long is the bar?", "7", "integer", unit="cm"),
    row(5, GPS, [GEOM, ALGEBRA], "What is pi to two places?", "3.14", "float", precision=2.0),
    row(6, GPS, [ARITH], "What is the ratio?", "1.5", "float", precision=1.0),
    row(7, MWP, [ALGEBRA], "Which values are roots?", "[1, 2]", "list"),
    row(8, MWP, [ARITH], "How many apples?", "4", "integer"),
    row(9, MWP, [ARITH, STATS], "What is the probability?", "0.25", "float", precision=2.0),
]
RESPONSES = ["(B)", "The answer is B.", "12 cm", "7", "The answer is 3.14159", "It is about 1.46.", "[1, 2]", "I don't know", "0.2"]


def load(tmp_path, rows=ROWS, features=FEATURES):
    bench = get_benchmark("mathvista")
    return bench, load_rows(bench, str(write_hub_dataset(tmp_path / "MathVista", {"testmini": rows}, features)))


def test_reads_the_public_schema_and_asks_the_format_prompt(tmp_path):
    bench, rows = load(tmp_path)
    items = build_items(bench, rows)
    assert [item.key for item in items] == [str(i) for i in range(1, 10)]
    assert items[0].text == (
        "Which shape is shown?\nA. triangle\nB. square\nC. circle\nAnswer with the option's letter from the given choices directly."
    )
    assert items[3].text == "How long is the bar? (Unit: cm)\nAnswer the question using a single integer number."
    assert items[4].text == "What is pi to two places?\nAnswer the question using a single floating-point number with two decimal places."
    assert items[5].text == "What is the ratio?\nAnswer the question using a single floating-point number with one decimal place."
    assert items[6].text == "Which values are roots?\nAnswer the question using a Python list."
    assert items[4].info["places"] == 2 and type(items[4].info["places"]) is int  # the float64 2.0, cast
    assert items[4].group == GPS and items[2].info["skills"] == [ARITH, GEOM]
    assert rows[0]["image"] == "images/1.jpg"  # the path column stays text; the image is decoded_image
    assert len(items[0].images) == 1 and items[0].images[0].size == picture(1).size and items[0].images[0].mode == "RGB"


def test_rule_based_answers_and_accuracy_by_hand(tmp_path):
    bench, rows = load(tmp_path)
    run = score_responses(bench, build_items(bench, rows), RESPONSES)
    # a letter -> its choice's text; 3.14159 rounded to 2 places; 1.46 to 1 place; "0.2" != "0.25"
    assert [j.parsed for j in run.judged] == ["square", "blue", "12 cm", "7", "3.14", "1.5", "[1, 2]", None, "0.2"]
    assert [j.correct for j in run.judged] == [True, False, True, True, True, True, True, False, False]
    tables = run.scores.tables
    assert {r["task"]: r["accuracy"] for r in tables["per task"]} == {FQA: 100 * 2 / 3, GPS: 100.0, MWP: 100 / 3, "all": 100 * 6 / 9}
    assert {r["question type"]: r["accuracy"] for r in tables["per question type"]} == {"multi_choice": 100 * 2 / 3, "free_form": 100 * 4 / 6, "all": 100 * 6 / 9}
    per_answer_type = {r["answer type"]: (r["n"], r["correct"]) for r in tables["per answer type"]}
    assert per_answer_type == {"text": (3, 2), "integer": (2, 1), "float": (3, 2), "list": (1, 1), "all": (9, 6)}
    # a question counts under each of its skills: 12 skill entries for 9 questions
    per_skill = {r["skill"]: (r["n"], r["correct"]) for r in tables["per skill"]}
    assert per_skill == {LOGIC: (2, 1), ARITH: (4, 2), GEOM: (3, 3), ALGEBRA: (2, 2), STATS: (1, 0), "all": (9, 6)}
    assert tables["per answer type"][-1]["unparsed"] == 1
    assert run.scores.headline == {"accuracy": 100 * 6 / 9}


def test_other_answer_styles(tmp_path):
    bench, rows = load(tmp_path)
    items = build_items(bench, rows)
    assert [bench.judge(items[0], r).parsed for r in ("B", "square", "The answer is C.", "banana")] == ["square", "square", "circle", None]
    assert [bench.judge(items[3], r).parsed for r in ("7.0", "The answer is 7 cm.", "seven")] == ["7", "7", None]
    assert [bench.judge(items[4], r).parsed for r in ("The answer is 3.14", "3.1", "pi")] == ["3.14", "3.1", None]
    assert [bench.judge(items[6], r).parsed for r in ("The roots are [1, 2].", "1 and 2")] == ["[1, 2]", None]


def test_a_copy_without_a_required_column_is_refused_by_name(tmp_path):
    features = Features({name: kind for name, kind in FEATURES.items() if name != "decoded_image"})
    rows = [{k: v for k, v in r.items() if k != "decoded_image"} for r in ROWS[:2]]
    with pytest.raises(SinkTrainError, match="'decoded_image'"):
        load(tmp_path, rows, features)
