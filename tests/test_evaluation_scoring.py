"""Answer extraction and scoring against hand-checked cases."""

from __future__ import annotations

from fractions import Fraction

import pytest

from langbridge.evaluation.scoring import (
    bbh_exact_match,
    extract_bbh_answer,
    extract_bbh_bn_answer,
    extract_last_number,
    format_number,
    normalize_digits,
    numbers_equal,
    parse_number,
    summarize_languages,
    truncate_at_stop,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Janet sells 16 - 3 - 4 = 9 duck eggs a day. 9 * 2 = 18. The answer is 18.", "18"),
        ("She makes $1,234.50 in total.", "1234.5"),
        ("The total is 1,000,000 dollars", "1000000"),
        ("Das macht 1.234.567 Euro.", "1234567"),
        ("Insgesamt 1.234,5 kg", "1234.5"),
        ("Il reste 2,5 litres.", "2.5"),
        ("The answer is 18.0", "18"),
        ("The answer is 18.00.", "18"),
        ("It costs €12", "12"),
        ("He lost -$5 on the deal", "-5"),
        ("The temperature is −7 degrees", "-7"),
        ("10-5=5", "5"),
        ("pages 5–10", "10"),
        ("উত্তর হল ১৮টি", "18"),  # Bengali digits and classifier
        ("คำตอบคือ ๑๒๕ บาท", "125"),  # Thai digits
        ("उत्तर २४ है", "24"),  # Devanagari digits
        ("الجواب ٣٬٥٠٠", "3500"),  # Arabic-Indic digits with Arabic thousands separator
        ("答案是１８元。", "18"),  # full-width digits
        ("答案是 18 个。", "18"),
        ("Half of it is 3/4 cup", "0.75"),
        ("one third: 1/3", "1/3"),
        ("He has 1\u00a0000 sheep", "1000"),  # no-break space thousands separator (fr, ru)
        ("Swiss style 1'250 francs", "1250"),
        ("3 100 pages", "100"),  # a plain space does not join numbers
        ("sequence 1,2,3", "3"),
        ("x² + 4", "4"),  # superscripts are not digits
        ("No number here.", None),
        ("", None),
    ],
)
def test_extract_last_number(text: str, expected: str | None) -> None:
    assert extract_last_number(text) == expected


def test_normalize_digits_maps_every_decimal_script() -> None:
    assert normalize_digits("০১২৩৪৫৬৭৮৯ ๐๑๒ ०१२ ٠١٢ ０１２") == "0123456789 012 012 012 012"


@pytest.mark.parametrize(
    ("value", "text"),
    [(Fraction(18), "18"), (Fraction(5, 2), "2.5"), (Fraction(-1, 8), "-0.125"), (Fraction(2, 3), "2/3")],
)
def test_format_number(value: Fraction, text: str) -> None:
    assert format_number(value) == text


def test_numbers_equal() -> None:
    assert numbers_equal("18", "18")
    assert numbers_equal("18", 18.0)  # MSVAMP stores answers as floats
    assert numbers_equal("1000", "1,000")
    assert numbers_equal("0.333333", "0.3333333")  # within tolerance
    assert not numbers_equal("17", "18")
    assert not numbers_equal(None, "18")
    with pytest.raises(ValueError, match="not a number"):
        numbers_equal("18", "eighteen")
    assert parse_number("৪২") == 42


def test_truncate_at_stop_takes_earliest() -> None:
    assert truncate_at_stop("a\n\nQuestion: b", ["Question:", "\n\n"]) == "a"
    assert truncate_at_stop("abc", []) == "abc"


@pytest.mark.parametrize(
    ("output", "gold", "extracted"),
    [
        ("Step by step... So the answer is (D).", "(D)", "D"),
        ("So the answer is (A). Wait, no. So the answer is (C).", "(C)", "C"),
        ("So the answer is Yes.", "Yes", "Yes"),
        ("So the answer is valid.", "valid", "valid"),
        ("We close them. So the answer is ] ) ).", "] ) )", "] ) )"),
        ("1 + 2.5 = 3.5. So the answer is 3.5.", "3.5", "3.5"),
        ("So the answer is -219.", "-219", "-219"),
        ("so THE ANSWER IS False.", "False", "False"),
        # No "the answer is": the paper's BBH-BN fallbacks (last option / Yes-No / valid-invalid).
        ("###Final answer: (B)", "(A)", "B"),
        ("I think the argument is invalid", "valid", "invalid"),
        ("Maybe Yes, but finally No", "Yes", "No"),
        ("nothing useful", "(A)", ""),
    ],
)
def test_extract_bbh_answer(output: str, gold: str, extracted: str) -> None:
    assert extract_bbh_answer(output, gold) == extracted


@pytest.mark.parametrize(
    ("output", "gold", "extracted"),
    [
        ("(A) looks wrong, (C) fits.\n###Final answer: (C)", "(A)", "C"),
        ("Option B. is the closest.\n###Final answer: B.", "(B)", "B"),  # "X." without parentheses
        ("I think D", "(B)", "D"),  # last capital letter ("I" comes first)
        ("Yes at first. No, on reflection.", "No", "No"),
        ("the answer is yes", "Yes", "yes"),  # lower case only when no capitalized Yes/No (then no match)
        ("The argument is invalid.", "valid", "invalid"),
        ("nothing here", "(A)", ""),
    ],
)
def test_extract_bbh_bn_answer(output: str, gold: str, extracted: str) -> None:
    assert extract_bbh_bn_answer(output, gold) == extracted


def test_bbh_exact_match_strips_parentheses_and_period() -> None:
    assert bbh_exact_match("D", "(D)")
    assert bbh_exact_match("(D)", "(D)")
    assert bbh_exact_match("] ) )", "] ) )")
    assert bbh_exact_match("Yes.", "Yes")
    assert not bbh_exact_match("yes", "Yes")  # exact match is case-sensitive, as in the paper
    assert not bbh_exact_match("C", "(D)")


def test_summarize_languages() -> None:
    scores = {"en": 0.8, "de": 0.6, "sw": 0.2, "bn": 0.0}
    summary = summarize_languages(scores, {"sw", "bn", "te"})
    assert summary == pytest.approx({"AVG": 0.4, "HRL": 0.7, "LRL": 0.1})
    assert summarize_languages({"en": 0.5}, set())["LRL"] is None
