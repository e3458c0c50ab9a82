"""CV-Bench: the loader reads its public schema, the prompt is the CV-Bench authors', answers in
every style are read, and the official 2D/3D/overall formula (not micro accuracy) matches a hand
count, also on a subset missing a source."""

import pytest
from datasets import Features, Image, Sequence, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.runner import build_items, score_responses
from sinktrain.errors import SinkTrainError

FEATURES = Features({
    "idx": Value("int64"), "type": Value("string"), "task": Value("string"), "image": Image(),
    "question": Value("string"), "choices": Sequence(Value("string")), "answer": Value("string"),
    "prompt": Value("string"), "filename": Value("string"), "source": Value("string"),
    "source_dataset": Value("string"), "source_filename": Value("string"), "target_class": Value("string"),
    "target_size": Value("int64"), "bbox": Sequence(Value("float64")),
})
COUNT_QUESTION = "How many organs are in the image? Select from the following choices."


def row(idx: int, source: str, task: str, question: str, choices: list[str], answer: str) -> dict:
    options = "\n".join(f"({chr(65 + i)}) {choice}" for i, choice in enumerate(choices))
    return {
        "idx": idx, "type": "3D" if source == "Omni3D" else "2D", "task": task, "image": picture(idx), "question": question,
        "choices": choices, "answer": answer, "prompt": f"{question}\n{options}", "filename": f"img/{idx}.png", "source": source,
        "source_dataset": source, "source_filename": f"{idx}.jpg", "target_class": None, "target_size": None, "bbox": None,
    }


ROWS = [
    row(0, "ADE20K", "Count", COUNT_QUESTION, ["3", "2", "1", "0"], "(C)"),
    row(1, "ADE20K", "Relation", "Is the lamp left or right of the bed?", ["left", "right"], "(B)"),
    row(2, "COCO", "Count", "How many cups are in the image?", ["4", "3", "2"], "(A)"),
    row(3, "Omni3D", "Depth", "Which is closer to the camera?", ["the lamp", "the chair"], "(A)"),
    row(4, "Omni3D", "Distance", "Which is closer to the table?", ["the door", "the sofa"], "(B)"),
    row(5, "Omni3D", "Depth", "Which is closer to the camera?", ["the desk", "the shelf"], "(A)"),
    row(6, "Omni3D", "Distance", "Which is closer to the bed?", ["the rug", "the tv"], "(A)"),
]
# Option text (a count), "(B)", a wrong letter, option text, "(B)" after a phrase (lmms-eval reads
# "T"), an unreadable answer, a bare letter.
RESPONSES = ["1", "(B)", "The answer is B.", "the lamp", "The answer is (B)", "I cannot tell", "A"]


def items_of(tmp_path, rows=ROWS):
    bench = get_benchmark("cvbench")
    return bench, build_items(bench, load_rows(bench, str(write_hub_dataset(tmp_path / "CV-Bench", {"test": rows}, FEATURES))))


def test_reads_the_public_schema_and_asks_the_authors_prompt(tmp_path):
    bench, items = items_of(tmp_path)
    assert [item.key for item in items] == [str(i) for i in range(7)]
    assert items[0].text == (
        "How many organs are in the image? Select from the following choices.\n(A) 3\n(B) 2\n(C) 1\n(D) 0\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert [item.gold for item in items] == ["C", "B", "A", "A", "B", "A", "A"]
    assert [item.group for item in items[:4]] == ["Count", "Relation", "Count", "Depth"]
    assert items[4].info == {"choices": ["the door", "the sofa"], "source": "Omni3D", "type": "3D"}
    assert len(items[2].images) == 1 and items[2].images[0].size == picture(2).size and items[2].images[0].mode == "RGB"


def test_official_formula_differs_from_micro_accuracy_by_hand(tmp_path):
    bench, items = items_of(tmp_path)
    run = score_responses(bench, items, RESPONSES)
    assert [j.parsed for j in run.judged] == ["C", "B", "B", "A", "B", None, "A"]
    assert [j.correct for j in run.judged] == [True, True, False, True, True, False, True]
    per_task = {r["task"]: r["accuracy"] for r in run.scores.tables["per task"]}
    assert per_task == {"Count": 50.0, "Relation": 100.0, "Depth": 50.0, "Distance": 100.0, "all": 100 * 5 / 7}
    per_source = {r["source"]: r["accuracy"] for r in run.scores.tables["per source"]}
    assert per_source == {"ADE20K": 100.0, "COCO": 0.0, "Omni3D": 75.0, "all": 100 * 5 / 7}
    per_type = {r["type"]: r for r in run.scores.tables["per type"]}
    assert per_type["2D"]["accuracy"] == 100 * 2 / 3 and per_type["3D"]["accuracy"] == 75.0 and per_type["3D"]["unparsed"] == 1
    # 2D = (100 + 0) / 2, 3D = 75, overall = (50 + 75) / 2; lmms-eval's micro accuracy 5/7
    assert run.scores.headline == {"overall": 62.5, "2D": 50.0, "3D": 75.0, "lmms_eval_accuracy": 100 * 5 / 7}


def test_a_subset_without_a_source_is_scored_over_the_sources_present(tmp_path):
    bench, items = items_of(tmp_path)
    run = score_responses(bench, items, RESPONSES)
    no_coco = [i for i, item in enumerate(items) if item.info["source"] != "COCO"]
    scores = bench.scores([items[i] for i in no_coco], [run.judged[i] for i in no_coco])
    assert scores.headline == {"overall": 87.5, "2D": 100.0, "3D": 75.0, "lmms_eval_accuracy": 500 / 6}
    assert any("no COCO questions" in note for note in scores.notes)
    only_2d = bench.scores(items[:3], run.judged[:3])
    assert only_2d.headline == {"overall": 50.0, "2D": 50.0, "lmms_eval_accuracy": 100 * 2 / 3}
    assert any("no Omni3D questions" in note and "left out" in note for note in only_2d.notes)


def test_a_copy_without_a_required_column_is_refused_by_name(tmp_path):
    features = Features({name: kind for name, kind in FEATURES.items() if name != "source"})
    rows = [{k: v for k, v in r.items() if k != "source"} for r in ROWS[:2]]
    bench = get_benchmark("cvbench")
    with pytest.raises(SinkTrainError, match="'source'"):
        load_rows(bench, str(write_hub_dataset(tmp_path / "CV-Bench", {"test": rows}, features)))
