"""MME: the loader reads its public schema, the prompt is lmms-eval's (only the exact " Please answer
yes or no." removed), keys are unique though two questions share an image's question_id, yes/no is
read in the styles models answer, and acc / acc+ / score per category and the perception and
cognition sums match hand counts."""

import pytest
from datasets import Features, Image, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import as_sample, build_items, score_responses
from sinktrain.errors import SinkTrainError

FEATURES = Features({
    "question_id": Value("string"), "image": Image(), "question": Value("string"), "answer": Value("string"), "category": Value("string"),
})
TAIL = " Please answer yes or no."
SHARED = "images/0001.png"  # one question_id in two categories: acc+ must group within a category


def row(seed: int, question_id: str, question: str, answer: str, category: str) -> dict:
    return {"question_id": question_id, "image": picture(seed), "question": question, "answer": answer, "category": category}


# (row, response, right?)
CASES = [
    # existence: image 1 both right, image 2 one wrong -> acc 3/4 = 75, acc+ 1/2 = 50, score 125
    (row(0, SHARED, "Is there a dog in this image?" + TAIL, "Yes", "existence"), "Yes", True),
    (row(0, SHARED, "Is there a cat in this image?" + TAIL, "No", "existence"), "No", True),
    (row(1, "existence/0002.png", "Is there a car in this image?" + TAIL, "Yes", "existence"), "yes.", True),
    (row(1, "existence/0002.png", "Is there a bus in this image?" + TAIL, "No", "existence"), "Yes", False),
    # count (same question_id as existence's first image): one right, one wrong -> acc 50, acc+ 0, score 50
    (row(2, SHARED, "Is there one dog in the image?" + TAIL, "Yes", "count"), "There is no dog.", False),
    (row(2, SHARED, "Are there three dogs in the image?" + TAIL, "No", "count"), "no", True),
    # code_reasoning: image 1 one right, one unparsed; image 2 cut to one question, right
    # -> acc 2/3, acc+ 1/2 = 50, score 66.67 + 50 = 116.67
    (row(3, "code_reasoning/0020.png", "Is a python code shown in the picture?" + TAIL, "Yes", "code_reasoning"), "YES!", True),
    (row(3, "code_reasoning/0020.png", "Is a C++ code shown in the picture?" + TAIL, "No", "code_reasoning"), "zxq blorp", False),
    (row(4, "code_reasoning/0021.png", "Will this code print 5?" + TAIL, "No", "code_reasoning"), "No,", True),
    # not an MME category: in the table, in neither sum; its questions lack the exact tail, so keep it
    (row(5, "mystery/0001.png", "Is this a cat? Please answer yes or no", "Yes", "mystery"), "yes", True),
    (row(5, "mystery/0001.png", "Is this a dog? please answer yes or no.", "No", "mystery"), "no", True),
]
ROWS = [case[0] for case in CASES]
RESPONSES = [case[1] for case in CASES]


def load(tmp_path, rows=ROWS, features=FEATURES, folder="MME"):
    """Each different dataset gets its own folder name: datasets 5.2 alone keys a local copy's cache by
    its folder name and README, not its files (a second "MME" would get the first one's rows)."""
    bench = get_benchmark("mme")
    return bench, load_rows(bench, str(write_hub_dataset(tmp_path / folder, {"test": rows}, features)))


def test_reads_the_public_schema_and_asks_lmms_evals_prompt(tmp_path):
    bench, rows = load(tmp_path)
    items = build_items(bench, rows)
    assert [item.key for item in items[:6]] == [f"{SHARED}#1", f"{SHARED}#2", "existence/0002.png#1", "existence/0002.png#2", f"{SHARED}#3", f"{SHARED}#4"]
    assert [item.info["question_id"] for item in items[4:6]] == [SHARED, SHARED]
    assert items[6].text == "Is a python code shown in the picture?\nAnswer the question using a single word or phrase."
    assert items[9].text == "Is this a cat? Please answer yes or no\nAnswer the question using a single word or phrase."
    assert items[10].text == "Is this a dog? please answer yes or no.\nAnswer the question using a single word or phrase."
    assert [item.gold for item in items] == ["yes", "no", "yes", "no", "yes", "no", "yes", "no", "no", "yes", "no"]
    assert len(items[2].images) == 1 and items[2].images[0].size == picture(1).size and items[2].images[0].mode == "RGB"
    assert as_sample(items[6]).question[0]["value"].startswith("<image>\nIs a python code shown in the picture?\n")
    assert [item.key for item in build_items(bench, rows)] == [item.key for item in items]  # read again: the same keys


def test_reads_yes_and_no_in_the_styles_models_answer(tmp_path):
    bench, rows = load(tmp_path)
    run = score_responses(bench, build_items(bench, rows), RESPONSES)
    assert [j.parsed for j in run.judged] == ["yes", "no", "yes", "yes", "no", "no", "yes", None, "no", "yes", "no"]
    assert [j.correct for j in run.judged] == [right for _, _, right in CASES]
    assert run.unparsed == 1


def test_acc_plus_per_category_and_the_perception_cognition_sums_by_hand(tmp_path):
    bench, rows = load(tmp_path)
    scores = score_responses(bench, build_items(bench, rows), RESPONSES).scores
    table = {r["category"]: r for r in scores.tables["per category"]}
    assert list(table) == ["existence", "count", "code_reasoning", "mystery"]  # perception, cognition, unknown
    existence, count, code, mystery = table["existence"], table["count"], table["code_reasoning"], table["mystery"]
    # existence: 3 of 4 questions, 1 of 2 images (grouped apart from count's questions of the same question_id)
    assert (existence["questions"], existence["images"], existence["acc"], existence["acc+"], existence["score"]) == (4, 2, 75.0, 50.0, 125.0)
    # count: one right and one wrong on its only image -> acc+ 0
    assert (count["acc"], count["acc+"], count["score"]) == (50.0, 0.0, 50.0)
    # code_reasoning: 2 of 3 questions; the one-question image counts for acc+ with its one answer right
    assert (code["questions"], code["images"], code["one_question_images"], code["unparsed"]) == (3, 2, 1, 1)
    assert (code["acc"], code["acc+"], code["score"]) == pytest.approx((200 / 3, 50.0, 200 / 3 + 50))
    assert (mystery["part"], mystery["score"]) == ("neither", 200.0)
    # perception 125 + 50 (2 of 10 present), cognition 116.67 (1 of 4), mystery's 200 in neither
    assert scores.headline == pytest.approx({"perception": 175.0, "cognition": 200 / 3 + 50, "total": 175 + 200 / 3 + 50})
    parts = {r["part"]: r for r in scores.tables["perception and cognition"]}
    assert (parts["perception"]["categories"], parts["perception"]["max"]) == ("2 of 10", 2000)
    assert (parts["cognition"]["categories"], parts["cognition"]["max"]) == ("1 of 4", 800)
    assert any("perception 2 of 10, cognition 1 of 4" in note for note in scores.notes)
    assert any("neither sum: mystery" in note for note in scores.notes)
    assert any("1 image(s) have only one of their questions" in note for note in scores.notes)


def test_every_answer_right_gives_200_per_category():
    bench = get_benchmark("mme")
    rows = [r for r in ROWS if r["category"] == "existence"]
    items = [bench.item({k: v for k, v in r.items() if k != "image"}, lambda *columns: []) for r in rows]
    scores = score_responses(bench, items, [item.gold for item in items]).scores
    assert scores.headline == {"perception": 200.0, "cognition": 0.0, "total": 200.0}
    assert bench.scores([], []).headline == {"perception": 0.0, "cognition": 0.0, "total": 0.0}


def test_an_answer_other_than_yes_or_no_is_refused():
    with pytest.raises(SinkTrainError, match="'Maybe'"):
        get_benchmark("mme").item({"question_id": "x.png", "question": "Q?", "answer": "Maybe", "category": "count"}, lambda *c: [])


def test_a_copy_without_the_question_id_column_is_refused_by_name(tmp_path):
    features = Features({name: kind for name, kind in FEATURES.items() if name != "question_id"})
    rows = [{k: v for k, v in r.items() if k != "question_id"} for r in ROWS[:2]]
    with pytest.raises(SinkTrainError, match="no column 'question_id'"):
        load(tmp_path, rows, features, folder="MME-without-question_id")
