"""MMMU: the loader reads lmms-lab/MMMU's schema (options as a list's text, seven nullable image
columns), the prompts are lmms-eval's, a question gets the images it names in number order,
answers are read (multiple choice by letter or text, open ones the official way), and accuracy per
subject / discipline / overall and the seeded random-guess number match hand counts."""

import random

import pytest
from datasets import Features, Image, Value

from hub_data import picture, write_hub_dataset
from sinktrain.benchmarks import get_benchmark, load_rows
from sinktrain.benchmarks.mmmu import open_candidates, open_correct
from sinktrain.benchmarks.runner import as_sample, build_items, score_responses
from sinktrain.errors import SinkTrainError

IMAGES = [f"image_{n}" for n in range(1, 8)]
TEXT_COLUMNS = ("id", "question", "options", "explanation", "img_type", "answer", "topic_difficulty", "question_type", "subfield")
FEATURES = Features({**{column: Value("string") for column in TEXT_COLUMNS}, **{column: Image() for column in IMAGES}})
MC, OPEN = "multiple-choice", "open"


def row(key: str, question: str, options: str, answer: str, images: int, kind: str = MC) -> dict:
    """A row with images image_1..image_{images} (picture(10 * n + k) for question n), the rest null."""
    number = int(key.rsplit("_", 1)[1])
    pictures = {column: picture(10 * number + k) if k <= images else None for k, column in enumerate(IMAGES, 1)}
    text = {"explanation": "", "img_type": "['Photographs']", "topic_difficulty": "Medium", "subfield": "Some subfield"}
    return {"id": key, "question": question, "options": options, "answer": answer, "question_type": kind, **text, **pictures}


ROWS = [
    row("validation_Art_Theory_1", "Compare <image 2> with <image 1>. Which was painted first?", "['The first', 'The second']", "A", 3),
    row("validation_Art_Theory_2", "Which of these is a fresco?", "['<image 1>', '<image 2>']", "B", 2),
    row("validation_Accounting_3", "<image 1> What is the total cost?", "['$10', '$20', '$30', '$40']", "C", 1),
    row("validation_Accounting_4", "<image 1> Is this a profit or a loss?", "['loss', 'profit']", "A", 1),
    row("validation_Math_5", "<image 1> What is the area of the circle?", "[]", "3.14", 1, OPEN),
    row("validation_Math_6", "<image 1> Name the ratio.", "[]", "['24/7', '3.43']", 1, OPEN),
    row("validation_Math_7", "<image 1> What is the area?", "[]", "12", 1, OPEN),
    row("validation_Math_8", "<image 1> What colour is the square?", "[]", "blue", 1, OPEN),
    row("validation_Physics_9", "<image 1> Which particle carries negative charge?", "['proton', 'electron', 'neutron']", "B", 1),
]
RESPONSES = [
    "(A)",  # right
    "B. <image 2>",  # right
    "The answer is B.",  # wrong letter
    "I cannot tell from the image",  # unparsed; its seeded guess is A, the gold
    "The area is 3.14159 square units.",  # right: 3.14159 rounds to 3.14
    "24/7",  # right: one of the gold list's entries
    "The radius is 2\nSo the area is 12",  # right: the second candidate (12), not the first (2)
    "",  # unparsed
    "electron",  # right, by the option's text
]


def load(tmp_path):
    bench = get_benchmark("mmmu")
    path = write_hub_dataset(tmp_path / "MMMU", {"validation": ROWS}, FEATURES)
    return bench, build_items(bench, load_rows(bench, str(path)))


def same_picture(image, seed: int) -> bool:
    return image.mode == "RGB" and image.size == picture(seed).size and image.getpixel((0, 0)) == picture(seed).getpixel((0, 0))


def test_reads_the_public_schema_and_asks_lmms_evals_prompts(tmp_path):
    bench, items = load(tmp_path)
    assert [item.key for item in items] == [r["id"] for r in ROWS]
    assert items[0].text == (
        "Compare <image 2> with <image 1>. Which was painted first?\nA. The first\nB. The second\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert items[4].text == "<image 1> What is the area of the circle?\n\nAnswer the question using a single word or phrase."
    assert [item.group for item in items] == ["Art_Theory"] * 2 + ["Accounting"] * 2 + ["Math"] * 4 + ["Physics"]
    assert [item.info["discipline"] for item in items[::2]] == ["Art and Design", "Business", "Science", "Science", "Science"]


def test_a_question_gets_the_images_it_names_in_number_order(tmp_path):
    bench, items = load(tmp_path)
    # <image 2> then <image 1> in the text -> image_1, image_2; image_3 is there but not named
    assert len(items[0].images) == 2 and same_picture(items[0].images[0], 11) and same_picture(items[0].images[1], 12)
    # named only in the options
    assert len(items[1].images) == 2 and same_picture(items[1].images[0], 21) and same_picture(items[1].images[1], 22)
    assert len(items[4].images) == 1 and same_picture(items[4].images[0], 51)
    assert as_sample(items[0]).question[0]["value"].startswith("<image> <image>\nCompare <image 2> with <image 1>.")


def test_reads_multiple_choice_and_open_answers(tmp_path):
    bench, items = load(tmp_path)
    run = score_responses(bench, items, RESPONSES)
    parsed = [j.parsed for j in run.judged]
    assert parsed[:4] == ["A", "B", "B", None] and parsed[8] == "B"
    assert parsed[4] == ["3.14159 square units", 3.14]
    assert parsed[5] == ["24/7", 24.0, 7.0]
    assert parsed[6] == [2.0, 12.0]
    assert parsed[7] is None
    assert [j.correct for j in run.judged] == [True, True, False, False, True, True, True, False, True]
    assert run.unparsed == 2


def test_open_answers_match_the_official_way():
    assert open_correct(open_candidates("It costs 1,000 dollars"), ["1000"])  # commas dropped, numbers compared
    assert open_correct(open_candidates("The answer is Blue."), ["blue"])  # case-insensitive
    assert open_correct(open_candidates("dark blue"), ["blue"])  # the gold inside the answer phrase
    assert not open_correct(open_candidates("The answer is 3.2"), ["3.14"])
    assert open_candidates("1.5e3") == [1500.0]
    assert open_candidates("a") == [" a", "a "] and open_correct(["a "], ["A"])  # single letters padded


def test_accuracy_per_subject_discipline_overall_and_with_random_guess_by_hand(tmp_path):
    bench, items = load(tmp_path)
    scores = score_responses(bench, items, RESPONSES).scores

    def table(title):
        label = next(iter(scores.tables[title][0]))
        return {r[label]: (r["n"], r["correct"], r["unparsed"], r["accuracy"]) for r in scores.tables[title]}

    assert table("per subject") == {
        "Accounting": (2, 0, 1, 0.0), "Art_Theory": (2, 2, 0, 100.0), "Math": (4, 3, 1, 75.0), "Physics": (1, 1, 0, 100.0),
        "all": (9, 6, 2, 100 * 6 / 9),
    }
    # Science pools Math's 4 and Physics' 1 questions: 4/5, not the subjects' mean (75 + 100) / 2
    assert table("per discipline") == {
        "Art and Design": (2, 2, 0, 100.0), "Business": (2, 0, 1, 0.0), "Science": (5, 4, 1, 80.0), "all": (9, 6, 2, 100 * 6 / 9),
    }
    assert table("per question type") == {MC: (5, 3, 1, 60.0), OPEN: (4, 3, 1, 75.0), "all": (9, 6, 2, 100 * 6 / 9)}
    # the unreadable multiple-choice answer is replaced by random.Random(id).choice(letters); the open one is not
    guess = random.Random("validation_Accounting_4").choice(["A", "B"])
    assert guess == "A"
    assert scores.headline == {"accuracy": 100 * 6 / 9, "accuracy_with_random_guess": 100 * 7 / 9}


def test_a_copy_without_a_required_column_is_refused_naming_it(tmp_path):
    features = Features({name: feature for name, feature in FEATURES.items() if name != "question_type"})
    rows = [{name: value for name, value in r.items() if name != "question_type"} for r in ROWS]
    path = write_hub_dataset(tmp_path / "MMMU-no-type", {"validation": rows}, features)
    with pytest.raises(SinkTrainError, match="'question_type'"):
        load_rows(get_benchmark("mmmu"), str(path))
