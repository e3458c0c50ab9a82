"""The answer readers on the styles models actually produce, and None (unparsed) when a response
holds no answer of the kind asked."""

import pytest

from sinktrain.benchmarks.extract import last_list, last_number, option_letter, yes_no

OPTIONS = ["a red cat", "dog", "cat", "blue"]


@pytest.mark.parametrize("response, letter", [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("[B]", "B"), ("B: dog", "B"), ("B. dog", "B"),
    ("The answer is B.", "B"), ("the answer is (C)", "C"), ("Answer: D", "D"), ("I choose C", "C"), ("Option C", "C"),
    ("dog", "B"), ("Dog.", "B"), ("It is a red cat.", "A"),  # option text; "cat" inside "a red cat" does not count twice
    ("a cat", "C"), ("I think (C) is right", "C"), ("<think>maybe A</think>\nC", "C"),
    ("none of them", None), ("E", None), ("A or B", None), ("", None), ("The answer is e", None),
])
def test_option_letter(response, letter):
    assert option_letter(response, OPTIONS) == letter


def test_option_letter_with_only_a_count_reads_letters_only():
    assert option_letter("(C)", 4) == "C" and option_letter("The answer is D.", 4) == "D"
    assert option_letter("dog", 4) is None and option_letter("E", 4) is None


@pytest.mark.parametrize("response, answer", [
    ("Yes", "yes"), ("yes.", "yes"), ("YES!", "yes"), ("No,", "no"), ("no", "no"), ("No, there is not.", "no"),
    ("There is no dog in the image.", "no"), ("The dog is not visible.", "no"), ("Yes, there is a dog.", "yes"),
    ("There is a dog.", None), ("banana", None), ("", None),
])
def test_yes_no(response, answer):
    assert yes_no(response) == answer


def test_numbers_and_lists():
    assert last_number("The answer is 3.14") == 3.14
    assert last_number("12 apples, so the answer: 1,234.5 kg") == 1234.5
    assert last_number("x = 3 and y = -2") == -2.0
    assert last_number("no number here") is None
    assert last_list("so the answer is [1, 2.5, 3]") == [1, 2.5, 3]
    assert last_list("[broken, and then [4, 5]") == [4, 5]
    assert last_list("none") is None
