"""MMStar: the loader reads its public schema, the prompt is lmms-eval's, answers in every style
are read, and accuracy per category / l2 category and lmms-eval's average match hand counts."""

from hub_data import MMSTAR_FEATURES as FEATURES
from hub_data import mmstar_row as row
from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import as_sample, build_items, score_responses

PERCEPTION, MATH = "coarse perception", "math"


ROWS = [
    row(0, "A", PERCEPTION, "image scene and topic"),
    row(1, "B", PERCEPTION, "image scene and topic"),
    row(2, "C", PERCEPTION, "image scene and topic"),
    row(3, "D", PERCEPTION, "image emotion"),
    row(4, "A", MATH, "geometry"),
    row(5, "B", MATH, "geometry"),
]
# Styles models produce; 0-2 and 4 right, 3 wrong, 5 unreadable.
RESPONSES = ["A", "(B)", "three birds", "The answer is B.", "a. a red cat", "I am not sure"]


def test_reads_the_public_schema_and_asks_lmms_evals_prompt(tmp_path):
    bench = get_benchmark("mmstar")
    rows = load_rows(bench, str(write_hub_dataset(tmp_path / "MMStar", {"val": ROWS}, FEATURES)))
    items = build_items(bench, rows)
    assert [item.key for item in items] == [str(i) for i in range(6)]
    assert items[0].text == (
        "What is shown in picture 0?\nOptions: A: a red cat, B: a dog, C: three birds, D: nothing\n"
        "Answer with the option's letter from the given choices directly"
    )
    assert items[0].info["options"] == ["a red cat", "a dog", "three birds", "nothing"]
    assert len(items[3].images) == 1 and items[3].images[0].size == picture(3).size and items[3].images[0].mode == "RGB"
    question = as_sample(items[0]).question[0]["value"]
    assert question.startswith("<image>\nWhat is shown in picture 0?")


def test_accuracy_per_category_and_l2_average_by_hand(tmp_path):
    bench = get_benchmark("mmstar")
    items = build_items(bench, load_rows(bench, str(write_hub_dataset(tmp_path / "MMStar", {"val": ROWS}, FEATURES))))
    run = score_responses(bench, items, RESPONSES)
    assert [j.parsed for j in run.judged] == ["A", "B", "C", "B", "A", None]
    assert [j.correct for j in run.judged] == [True, True, True, False, True, False]
    per_category = {r["category"]: r for r in run.scores.tables["per category"]}
    assert per_category[PERCEPTION]["accuracy"] == 75.0 and per_category[MATH]["accuracy"] == 50.0
    assert per_category[MATH]["unparsed"] == 1 and per_category["all"]["unparsed"] == 1
    # micro 4/6; lmms-eval's average over the 3 l2 categories: (100 + 0 + 50) / 3
    assert run.scores.headline["accuracy"] == 100 * 4 / 6
    assert run.scores.headline["lmms_eval_average"] == 50.0
