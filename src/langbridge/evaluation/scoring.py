"""Answer extraction and scoring: numbers (MGSM/MSVAMP), BBH answers, per-language summaries.

Pure functions without torch so they are cheap to test and reuse.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from fractions import Fraction

from ..utils import truncate_at_stop

__all__ = [
    "normalize_digits",
    "parse_number",
    "extract_last_number",
    "format_number",
    "numbers_equal",
    "truncate_at_stop",
    "extract_bbh_answer",
    "extract_bbh_bn_answer",
    "bbh_exact_match",
    "summarize_languages",
]

# Characters that only decorate a number: currency signs are Unicode category "Sc"; these are the usual
# ones written as letters or words next to numbers in model outputs.
_MINUS_SIGNS = (
    "-\u2212\u2012\u2013\uff0d"  # hyphen-minus, minus sign, figure dash, en dash, full-width hyphen
)
# No-break, narrow no-break and thin space; a plain space is left out so "3 100" stays two numbers.
_SPACE_SEPARATORS = "\u00a0\u202f\u2009"
_APOSTROPHES = "'\u2019"
# Arabic decimal and thousands separators, and full-width punctuation, mapped to their ASCII forms.
_PUNCT_MAP = str.maketrans({"\u066b": ".", "\u066c": ",", "\uff0c": ",", "\uff0e": ".", "\uff05": "%"})

# A number token: optional sign, digits, then groups joined by "." or ",", or thousands groups joined by
# a no-break space/apostrophe that must hold exactly three digits, optionally "/digits" for a fraction.
# A sign counts only when not glued to a preceding word or number ("5-3" is 5 and 3, "5–10" a range).
_NUMBER_RE = re.compile(
    rf"(?P<sign>(?<!\w)[{_MINUS_SIGNS}])?"
    rf"(?P<body>\d+(?:(?:[.,]\d+)|(?:[{_SPACE_SEPARATORS}{_APOSTROPHES}]\d{{3}}(?!\d)))*)"
    r"(?:/(?P<den>\d+(?:\.\d+)?))?"
)


def normalize_digits(text: str) -> str:
    """Map every decimal digit of any script (Bengali ০-৯, Thai ๐-๙, Devanagari, Arabic-Indic, full-width
    ０-９, ...) to ASCII, plus Arabic/full-width separators. Superscripts stay as they are (not Nd digits)."""
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
            continue
        value = unicodedata.decimal(ch, None)
        out.append(str(value) if value is not None else ch)
    text = "".join(out).translate(_PUNCT_MAP)
    # Currency signs sit between a minus and the digits ("-$5"); drop them.
    return "".join(ch for ch in text if unicodedata.category(ch) != "Sc")


def _parse_body(body: str) -> list[Fraction]:
    """Parse one matched digit run into one or more numbers (a run like "1,2,3" is a list, not one number)."""
    # Space/apostrophe separators were only matched before exactly three digits: always thousands.
    body = re.sub(rf"[{_SPACE_SEPARATORS}{_APOSTROPHES}]", "", body)
    commas, dots = body.count(","), body.count(".")
    if commas and dots:
        # Both kinds: the last one is the decimal mark ("1,234.5" English, "1.234,5" German).
        if body.rfind(",") > body.rfind("."):
            body = body.replace(".", "").replace(",", ".")
        else:
            body = body.replace(",", "")
        if body.count(".") > 1:
            return [Fraction(p) for p in body.split(".") if p]
        return [Fraction(body)]
    sep = "," if commas else "." if dots else ""
    if not sep:
        return [Fraction(body)]
    head, *groups = body.split(sep)
    if all(len(g) == 3 for g in groups) and (sep == "," or len(groups) > 1) and len(head) <= 3:
        # "1,234", "12,345,678", German "1.234.567": thousands separators.
        return [Fraction(head + "".join(groups))]
    if len(groups) == 1:
        # One separator that is not a thousands mark: a decimal ("2.5", or "2,5" with a decimal comma).
        return [Fraction(f"{head}.{groups[0]}")]
    # "1,2,3" or "1.2.3": a list of numbers.
    return [Fraction(p) for p in (head, *groups)]


def parse_number(text: str) -> Fraction | None:
    """Parse a single number string (gold answers like "18", "18.0", "1,000", "-3", "৩", "3/4")."""
    numbers = _all_numbers(str(text).strip())
    return numbers[-1] if numbers else None


def _all_numbers(text: str) -> list[Fraction]:
    text = normalize_digits(text)
    found: list[Fraction] = []
    for match in _NUMBER_RE.finditer(text):
        values = _parse_body(match.group("body"))
        if match.group("den") is not None and len(values) == 1:
            den = Fraction(match.group("den"))
            values = [values[0] / den] if den != 0 else values
        if match.group("sign") and values:
            values[0] = -values[0]
        found.extend(values)
    return found


def extract_last_number(text: str) -> str | None:
    """The last number in a model output, normalized (see `format_number`); None when there is none.

    Handles thousands separators ("1,234", "1 234", "1'234", "1.234.567"), decimal commas ("2,5"),
    trailing ".0", currency signs and units around the number ("$1,000.00", "18元", "16টি"), negative
    numbers, simple fractions ("3/4") and digits of any script.
    """
    numbers = _all_numbers(text)
    return format_number(numbers[-1]) if numbers else None


def format_number(value: Fraction) -> str:
    """Canonical text of a number: integers without ".0", finite decimals in plain form, else "p/q"."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    # Finite decimal: print exactly, without float rounding noise.
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole = value.numerator // value.denominator
    rest = value - whole
    digits = []
    while rest:
        rest *= 10
        digit = rest.numerator // rest.denominator
        digits.append(str(digit))
        rest -= digit
    return f"{sign}{whole}.{''.join(digits)}"


def numbers_equal(predicted: str | None, gold: str | float | int, tolerance: float = 1e-6) -> bool:
    """Numeric equality of an extracted answer and the gold answer (both parsed the same way)."""
    if predicted is None:
        return False
    pred_value = parse_number(predicted)
    gold_value = parse_number(str(gold))
    if gold_value is None:
        raise ValueError(f"Gold answer {gold!r} is not a number; check the dataset file.")
    if pred_value is None:
        return False
    if pred_value == gold_value:
        return True
    # Gold answers stored as floats ("33.33") only match up to their printed precision.
    return abs(float(pred_value) - float(gold_value)) <= tolerance * max(1.0, abs(float(gold_value)))


_ANSWER_IS_RE = re.compile(r"the answer is\s*:?\s*", re.IGNORECASE)
_CHOICE_RE = re.compile(r"\(([A-Z])\)")
_FALLBACK_PATTERNS = {
    "choice": [r"\([A-Z]\)", r"\b[A-Z]\.", r"\b[A-Z]\b"],
    "yesno": [r"\b(?:Yes|No)\b", r"\b(?:yes|no)\b"],
    "validity": [r"\b(?:valid|invalid|Valid|Invalid)\b"],
    "boolean": [r"\b(?:True|False)\b"],
}


def _answer_kind(gold: str) -> str | None:
    gold = gold.strip()
    if re.fullmatch(r"\(?[A-Z]\)?", gold):
        return "choice"
    if gold.lower() in ("yes", "no"):
        return "yesno"
    if gold.lower() in ("valid", "invalid"):
        return "validity"
    if gold in ("True", "False"):
        return "boolean"
    return None


def extract_bbh_answer(output: str, gold: str | None = None) -> str:
    """BBH answer extraction (Suzgun et al.): the text after the last "So the answer is" up to the end of
    that sentence; multiple-choice answers lose their parentheses. When the phrase is missing, fall back to
    the last option letter / Yes-No / valid-invalid / True-False in the output, chosen by the gold's form
    (the patterns of LangBridge's BBH-BN evaluation); else the empty string."""
    matches = list(_ANSWER_IS_RE.finditer(output))
    if matches:
        answer = output[matches[-1].end() :].split("\n", 1)[0].strip()
        # The answer sentence ends with a period; keep inner periods ("3.5", "A. B.").
        answer = answer[:-1].rstrip() if answer.endswith(".") else answer
        choice = _CHOICE_RE.fullmatch(answer) or _CHOICE_RE.match(answer)
        if choice and _answer_kind(gold or "(A)") == "choice":
            return choice.group(1)
        return answer.strip("()") if re.fullmatch(r"\([A-Z]\)|[A-Z]\)|\([A-Z]", answer) else answer
    kind = _answer_kind(gold) if gold is not None else None
    for pattern in _FALLBACK_PATTERNS.get(kind or "", []):
        found = re.findall(pattern, output)
        if found:
            return found[-1].strip().strip("().")
    return ""


# BBH-BN (LangBridge's evaluation): the patterns are tried in order on the whole output and the last match of
# the first one that matches is the answer; gold answers choose the list.
_BBH_BN_PATTERNS = {
    "choice": [r"\([A-Z]\)", r"[A-Z]\.", r"[A-Z]"],
    "yesno": [r"Yes|No", r"yes|no"],
    "validity": [r"valid|invalid|Valid|Invalid"],
}


def extract_bbh_bn_answer(output: str, gold: str) -> str:
    """BBH-BN answer extraction as in the paper's evaluation: the last "(X)" in the output, else the last "X.",
    else the last capital letter (multiple choice); the last Yes/No (then yes/no); the last valid/invalid.
    Parentheses are stripped, and so is the period of "X." (the original compares "B." with "B", never equal).
    Empty string when nothing matches."""
    kind = _answer_kind(gold)
    for pattern in _BBH_BN_PATTERNS.get(kind or "choice", _BBH_BN_PATTERNS["choice"]):
        found = re.findall(pattern, output)
        if found:
            answer = found[-1].strip("()")
            return answer[:-1] if kind == "choice" and answer.endswith(".") else answer
    return ""


def bbh_exact_match(extracted: str, gold: str) -> bool:
    """Exact match after stripping whitespace, a final period and the parentheses of "(A)"."""

    def norm(s: str) -> str:
        s = s.strip()
        s = s[:-1] if s.endswith(".") else s
        if re.fullmatch(r"\(?[A-Z]\)?", s):
            s = s.strip("()")
        return s.strip()

    return norm(extracted) == norm(gold)


def summarize_languages(
    scores: Mapping[str, float], low_resource: Iterable[str], order: Iterable[str] | None = None
) -> dict[str, float | None]:
    """AVG over all languages, HRL over the high-resource ones, LRL over the low-resource ones
    (None where a group is empty)."""
    low = set(low_resource)
    langs = [lang for lang in (order or scores) if lang in scores]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "AVG": mean([scores[lang] for lang in langs]),
        "HRL": mean([scores[lang] for lang in langs if lang not in low]),
        "LRL": mean([scores[lang] for lang in langs if lang in low]),
    }
