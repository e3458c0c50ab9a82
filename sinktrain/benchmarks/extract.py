"""Reading an answer out of a model's response: an option letter, yes/no, a number, a list.

Models answer "B", "(B)", "B. cat", "The answer is B.", "cat", "Yes.", "no," or "There is no
dog." The extractors here accept all of those and return None when the response holds no answer
of the kind asked (counted as wrong and reported as "unparsed"), never guessing: lmms-eval's
per-task parsers are stricter in places (POPE and ScienceQA-IMG exact strings, CV-Bench's first
letter of the response) and guess in others (MMMU picks a random option); each benchmark file says
where it departs.
"""

from __future__ import annotations

import ast
import re

THINK = re.compile(r"<think>.*?</think>", re.S)
# "the answer is (B)", "Answer: B", "correct option is B", "I choose B": the letter is upper case
ANSWER_PHRASE = re.compile(r"(?i:answer is|answer:|option is|choice is|option|i choose|i select)\s*[\(\[]?([A-Z])(?![A-Za-z])")
LEADING_LETTER = re.compile(r"^[\(\[]?([A-Z])(?:[\)\]\.:]|$)")  # "B.", "(B)", "B)", "B:", "[B]"
NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
PUNCTUATION = " \t\n.,:;!?'\"()[]*"


def clean(response: str) -> str:
    """The response without reasoning blocks (``<think>...</think>``) and surrounding space."""
    return THINK.sub("", response).strip()


def letters_for(options: list[str] | int) -> list[str]:
    count = options if isinstance(options, int) else len(options)
    return [chr(65 + i) for i in range(count)]


def option_letter(response: str, options: list[str] | int) -> str | None:
    """The option a response chose (options: their texts, or just how many there are): a bare
    letter, a leading "B." / "(B)", an answer phrase, the text of exactly one option, or a single
    "(B)" inside the text; None when none of those names exactly one option."""
    letters = letters_for(options)
    text = clean(response)
    bare = text.strip(PUNCTUATION)
    if len(bare) == 1 and bare.upper() in letters:
        return bare.upper()
    for pattern in (LEADING_LETTER, ANSWER_PHRASE):
        found = pattern.search(text)
        if found and found.group(1) in letters:
            return found.group(1)
    texts = [] if isinstance(options, int) else options
    return option_by_text(text, letters, texts) or single({m for m in re.findall(r"\(([A-Z])\)", text) if m in letters})


def option_by_text(text: str, letters: list[str], options: list[str]) -> str | None:
    """The letter of the option the response spells out: equal to it, or the only option it
    contains as whole words (an option inside a longer contained option does not count)."""
    said = normal_words(text)
    named = [(letter, normal_words(option)) for letter, option in zip(letters, options) if normal_words(option)]
    exact = single({letter for letter, option in named if option == said})
    if exact:
        return exact
    inside = [(letter, option) for letter, option in named if re.search(rf"(?<!\w){re.escape(option)}(?!\w)", said)]
    longest = [(letter, option) for letter, option in inside if not any(option != other and option in other for _, other in inside)]
    return single({letter for letter, _ in longest})


def normal_words(text: str) -> str:
    return " ".join(text.lower().strip(PUNCTUATION).split())


def single(found: set[str]) -> str | None:
    return next(iter(found)) if len(found) == 1 else None


def yes_no(response: str) -> str | None:
    """"yes" / "no": the first word when it is one, else a negation in the first sentence ("There
    is no dog." -> "no") or a "yes" in it; None when the response says neither."""
    text = clean(response).lower()
    words = re.findall(r"[a-z]+", text)
    if words and words[0] in ("yes", "no"):
        return words[0]
    first_sentence = set(re.findall(r"[a-z]+", re.split(r"[.\n]", text, maxsplit=1)[0]))
    if first_sentence & {"no", "not", "isn", "aren", "doesn", "don"}:
        return "no"
    return "yes" if "yes" in first_sentence else None


def last_number(response: str) -> float | None:
    """The last number in the response, after its last "answer" marker when it has one."""
    text = clean(response)
    marker = text.lower().rfind("answer")
    numbers = NUMBER.findall(text[marker:] if marker >= 0 else text) or NUMBER.findall(text)
    return float(numbers[-1].replace(",", "")) if numbers else None


def last_list(response: str) -> list | None:
    """The last Python list literal in the response ("[1, 2, 3]"), or None."""
    for candidate in reversed(re.findall(r"\[[^\[\]]*\]", clean(response))):
        try:
            value = ast.literal_eval(candidate)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, list):
            return value
    return None
