"""OCRBench: the loader reads its public schema (a list of gold answers, no id column), the
prompt is the question, OCRBench's matching rules (HME100k keeps case and drops spaces, the rest
fold case and fullwidth forms, gold inside the response) hold, and the per-type counts, Text
Recognition and the final score match hand counts."""

import pytest
from datasets import Features, Image, Sequence, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import build_items, score_responses
from sinktrain.errors import SinkTrainError

FEATURES = Features({
    "dataset": Value("string"), "question": Value("string"), "question_type": Value("string"),
    "answer": Sequence(Value("string")), "image": Image(),
})
READ = "what is written in the image?"
HMER = "Handwritten Mathematical Expression Recognition"


def row(seed: int, dataset: str, question_type: str, answers: list[str], question: str = READ) -> dict:
    return {"dataset": dataset, "question": question, "question_type": question_type, "answer": answers, "image": picture(seed)}


ROWS = [
    row(0, "IIIT5K", "Regular Text Recognition", ["HELLO"]),
    row(1, "IC13", "Irregular Text Recognition", ["Street"]),
    row(2, "WordArt", "Artistic Text Recognition", ["coffee"]),
    row(3, "HME100k", HMER, ["x ^ { 2 } + 1"], "Please write out the expression of the formula in the image using LaTeX format."),
    row(4, "HME100k", HMER, ["X^{2}"], "Please write out the expression of the formula in the image using LaTeX format."),
    row(5, "HME100k", HMER, ["a+b"], "Please write out the expression of the formula in the image using LaTeX format."),
    row(6, "textVQA", "Scene Text-centric VQA", ["stop", "stop sign"], " What does the sign say? "),
    row(7, "docVQA", "Doc-oriented VQA", ["1999"], "What year is the report from?"),
    row(8, "FUNSD", "Key Information Extraction", ["total"], "What is the key of the last field?"),
    row(9, "NonSemanticText", "Non-Semantic Text Recognition", ["new york"]),
]
RESPONSES = [
    "hello",                     # case folded: right
    "The text reads: STREET.",   # gold inside a longer response: right
    "ＣＯＦＦＥＥ",                # fullwidth letters folded to ASCII: right
    "x^{2}+1",                   # HME100k: spaces removed from both: right
    "x^{2}",                     # HME100k keeps case: wrong
    "a +\nb",                    # HME100k: newline and spaces removed: right
    "It says Stop",              # the second of two gold answers would do too: right
    "",                          # empty: unparsed
    "sum",                       # wrong
    "NEW\u3000YORK",             # ideographic space folded to a space: right
]


def load(tmp_path, rows=ROWS, features=FEATURES):
    bench = get_benchmark("ocrbench")
    return bench, load_rows(bench, str(write_hub_dataset(tmp_path / "OCRBench", {"test": rows}, features)))


def test_reads_the_public_schema_with_row_positions_as_keys(tmp_path):
    bench, rows = load(tmp_path)
    items = build_items(bench, rows)
    assert [item.key for item in items] == [str(i) for i in range(10)]  # questions repeat: the position tells them apart
    assert items[0].text == READ and items[6].text == "What does the sign say?"
    assert items[6].gold == ["stop", "stop sign"] and items[3].info == {"dataset": "HME100k"}
    assert items[3].group == HMER and len(items[3].images) == 1 and items[3].images[0].size == picture(3).size
    assert [item.key for item in build_items(bench, load_rows(bench, str(tmp_path / "OCRBench"), limit=3))] == ["0", "1", "2"]


def test_matching_rules_and_scores_by_hand(tmp_path):
    bench, rows = load(tmp_path)
    run = score_responses(bench, build_items(bench, rows), RESPONSES)
    assert [j.correct for j in run.judged] == [True, True, True, True, False, True, True, False, False, True]
    assert run.judged[7].parsed is None and run.unparsed == 1
    assert run.judged[2].parsed == "coffee" and run.judged[5].parsed == "a+b" and run.judged[9].parsed == "new york"
    table = run.scores.tables["per question type"]
    assert [(r["question type"], r["n"], r["correct"]) for r in table] == [
        ("Regular Text Recognition", 1, 1), ("Irregular Text Recognition", 1, 1), ("Artistic Text Recognition", 1, 1),
        ("Non-Semantic Text Recognition", 1, 1), ("Text Recognition", 4, 4),
        ("Scene Text-centric VQA", 1, 1), ("Doc-oriented VQA", 1, 0), ("Key Information Extraction", 1, 0),
        (HMER, 3, 2), ("Final Score", 10, 7),
    ]
    assert run.scores.headline == {"score": 7, "max_score": 10, "score_per_1000": 700.0}


def test_scoring_twice_counts_once(tmp_path):
    bench, rows = load(tmp_path)
    items = build_items(bench, rows)
    first = score_responses(bench, items, RESPONSES).scores.headline
    assert score_responses(bench, items, RESPONSES).scores.headline == first


def test_a_copy_without_a_required_column_is_refused_by_name(tmp_path):
    features = Features({name: kind for name, kind in FEATURES.items() if name != "question_type"})
    rows = [{k: v for k, v in r.items() if k != "question_type"} for r in ROWS[:2]]
    with pytest.raises(SinkTrainError, match="'question_type'"):
        load(tmp_path, rows, features)
