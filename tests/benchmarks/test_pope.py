"""POPE: the loader reads its public schema, the prompt is lmms-eval's, yes/no is read in the
styles models answer, and accuracy / precision / recall / F1 / yes_ratio per split and pooled match
a confusion matrix counted by hand."""

import pytest
from datasets import Features, Image, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.base import Item, Judged
from sinktrain.benchmarks.runner import as_sample, build_items, score_responses
from sinktrain.errors import SinkTrainError

FEATURES = Features({
    "id": Value("string"), "question_id": Value("string"), "question": Value("string"), "answer": Value("string"),
    "image_source": Value("string"), "image": Image(), "category": Value("string"),
})
OBJECTS = ["dog", "snowboard", "cup", "car", "chair", "bird", "bench", "clock", "kite", "oven"]


def row(index: int, answer: str, category: str) -> dict:
    return {
        "id": str(index), "question_id": str(index + 1), "question": f" Is there a {OBJECTS[index]} in the image? ",
        "answer": answer, "image_source": f"COCO_val2014_{index:012d}", "image": picture(index), "category": category,
    }


# (gold, response, cell): 2 splits of 5, every cell of the confusion matrix and an unparsed answer in each
CASES = [
    ("yes", "Yes", "TP"), ("yes", "no", "FN"), ("yes", "zxq blorp", "FN unparsed"), ("no", "yes.", "FP"), ("no", "No,", "TN"),
    ("yes", "YES!", "TP"), ("yes", "Yes, there is one.", "TP"), ("no", "There is no dog.", "TN"), ("no", "yes", "FP"),
    ("no", "I cannot tell from this picture", "unparsed"),
]
ROWS = [row(i, gold, "adversarial" if i < 5 else "random") for i, (gold, _, _) in enumerate(CASES)]
RESPONSES = [response for _, response, _ in CASES]


def load(tmp_path, rows=ROWS, features=FEATURES, folder="POPE"):
    """Each different dataset gets its own folder name: datasets 5.2 alone keys a local copy's cache by
    its folder name and README, not its files (a second "POPE" would get the first one's rows)."""
    bench = get_benchmark("pope")
    return bench, load_rows(bench, str(write_hub_dataset(tmp_path / folder, {"test": rows}, features)))


def test_reads_the_public_schema_and_asks_lmms_evals_prompt(tmp_path):
    bench, rows = load(tmp_path)
    items = build_items(bench, rows)
    assert [item.key for item in items] == [str(i + 1) for i in range(10)]
    assert items[0].text == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    assert [item.group for item in items] == ["adversarial"] * 5 + ["random"] * 5
    assert [item.gold for item in items] == [gold for gold, _, _ in CASES]
    assert len(items[3].images) == 1 and items[3].images[0].size == picture(3).size and items[3].images[0].mode == "RGB"
    assert as_sample(items[1]).question[0]["value"] == (
        "<image>\nIs there a snowboard in the image?\nAnswer the question using a single word or phrase."
    )


def test_reads_yes_and_no_in_the_styles_models_answer(tmp_path):
    bench, rows = load(tmp_path)
    run = score_responses(bench, build_items(bench, rows), RESPONSES)
    assert [j.parsed for j in run.judged] == ["yes", "no", None, "yes", "no", "yes", "yes", "no", "yes", None]
    assert [j.correct for j in run.judged] == [True, False, False, False, True, True, True, True, False, False]
    assert run.unparsed == 2


def test_confusion_matrix_metrics_by_hand(tmp_path):
    bench, rows = load(tmp_path)
    scores = score_responses(bench, build_items(bench, rows), RESPONSES).scores
    table = {r["split"]: r for r in scores.tables["per split"]}
    adversarial, random, pooled = table["adversarial"], table["random"], table["all"]
    assert [r["split"] for r in scores.tables["per split"]] == ["adversarial", "random", "all"]
    # adversarial: TP 1, FP 1, FN 2 (a "no" and an unparsed), TN 1; 2 of 5 right
    assert (adversarial["tp"], adversarial["fp"], adversarial["fn"], adversarial["tn"], adversarial["unparsed"]) == (1, 1, 2, 1, 1)
    assert adversarial["accuracy"] == pytest.approx(40.0)  # (1 + 1) / 5
    assert adversarial["precision"] == pytest.approx(50.0)  # 1 / (1 + 1)
    assert adversarial["recall"] == pytest.approx(100 / 3)  # 1 / (1 + 2)
    assert adversarial["f1"] == pytest.approx(40.0)  # 2 * 1/2 * 1/3 / (1/2 + 1/3) = (1/3) / (5/6) = 0.4
    assert adversarial["yes_ratio"] == pytest.approx(40.0)  # answered yes twice of 5
    # random: TP 2, FP 1, FN 0, TN 1, the unparsed one has gold no (in no cell); 3 of 5 right
    assert (random["tp"], random["fp"], random["fn"], random["tn"], random["unparsed"]) == (2, 1, 0, 1, 1)
    assert random["accuracy"] == pytest.approx(60.0)
    assert random["precision"] == pytest.approx(200 / 3)  # 2 / 3
    assert random["recall"] == pytest.approx(100.0)  # 2 / 2
    assert random["f1"] == pytest.approx(80.0)  # 2 * 2/3 * 1 / (5/3) = 0.8
    assert random["yes_ratio"] == pytest.approx(60.0)  # 3 of 5
    # pooled: TP 3, FP 2, FN 2, TN 2: P = R = F1 = 3/5, 5 of 10 right, answered yes 5 of 10
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["tn"], pooled["unparsed"], pooled["n"]) == (3, 2, 2, 2, 2, 10)
    assert (pooled["precision"], pooled["recall"], pooled["f1"]) == pytest.approx((60.0, 60.0, 60.0))
    assert (pooled["accuracy"], pooled["yes_ratio"]) == pytest.approx((50.0, 50.0))
    # headline: pooled accuracy and F1, and the mean of the splits' F1: (40 + 80) / 2
    assert scores.headline == pytest.approx({"accuracy": 50.0, "f1": 60.0, "mean_split_f1": 60.0})


def test_no_yes_at_all_gives_zero_not_a_division_error():
    bench = get_benchmark("pope")
    items = [Item(str(i), "q", [], "no", "popular") for i in range(3)]
    scores = bench.scores(items, [Judged("no", True), Judged(None, False), Judged("no", True)])
    only = scores.tables["per split"][0]
    assert (only["precision"], only["recall"], only["f1"], only["yes_ratio"]) == (0.0, 0.0, 0.0, 0.0)
    assert only["accuracy"] == pytest.approx(200 / 3) and scores.headline["mean_split_f1"] == 0.0
    assert bench.scores([], []).headline == {"accuracy": 0.0, "f1": 0.0, "mean_split_f1": 0.0}


def test_a_copy_without_the_category_column_is_refused_by_name(tmp_path):
    features = Features({name: kind for name, kind in FEATURES.items() if name != "category"})
    rows = [{k: v for k, v in r.items() if k != "category"} for r in ROWS[:2]]
    with pytest.raises(SinkTrainError, match="no column 'category'"):
        load(tmp_path, rows, features, folder="POPE-without-category")


def test_an_answer_other_than_yes_or_no_is_refused():
    with pytest.raises(SinkTrainError, match="'maybe'"):
        get_benchmark("pope").item({"question_id": "7", "question": "Q?", "answer": "maybe", "category": "random"}, lambda *c: [])
