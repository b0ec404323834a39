"""Which language did the model answer in? ("accidental translation", Yoon et al. 2024, Sec. 6).

Reads the predictions JSONL files written by ``langbridge eval`` (one generated answer per line), identifies
the language of every answer offline with lingua-language-detector, and reports per task and input language the
share of answers in the input language, in English, in another language, or undetermined (too few letters
after stripping numbers, math and code).

The detector is built only from the languages relevant to the run (all input languages of the files + English
+ ``extra_languages``): faster and more accurate than all 75 lingua languages, but "other" then means "another
candidate language". Use ``all_languages=True`` to let any lingua language count as "other".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ..utils import numbered_jsonl
from .languages import LanguageInfo, code_for_lingua_name, resolve_language

CATEGORIES: tuple[str, ...] = ("input_language", "english", "other", "undetermined")
LANGUAGE_KEYS: tuple[str, ...] = ("language", "lang")
OUTPUT_KEYS: tuple[str, ...] = ("output", "raw_output", "prediction", "generation", "response")
LINGUA_PIN = "lingua-language-detector==2.1.1"

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LATEX = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL)
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_URL = re.compile(r"https?://\S+|www\.\S+|\S+@\S+\.\S+")
# Tokens with digits or underscores (numbers, x1, snake_case identifiers) carry no language signal.
# ASCII only, so that unsegmented scripts (Chinese, Thai) do not lose the words next to a number.
_CODEISH = re.compile(r"[A-Za-z_]*[_0-9][A-Za-z0-9_]*")


def require_lingua() -> Any:
    try:
        import lingua
    except ImportError as err:
        raise ImportError(
            "The output-language analysis needs the offline language identifier lingua-language-detector: "
            f"run `pip install {LINGUA_PIN}` (or `pip install 'langbridge[analysis]'`)."
        ) from err
    return lingua


def clean_for_identification(text: str) -> str:
    """Drop the parts of an answer that say nothing about its language: code, math, numbers, URLs."""
    text = _CODE_BLOCK.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _LATEX.sub(" ", text)
    text = _LATEX_CMD.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _CODEISH.sub(" ", text)
    chars = []
    for ch in text:
        cat = unicodedata.category(ch)
        # Keep letters, combining marks (Indic/Thai vowel signs), spaces and ordinary punctuation.
        if cat[0] in "LM" or ch.isspace() or (cat[0] == "P" and ch not in "_#"):
            chars.append(ch)
        else:
            chars.append(" ")
    return re.sub(r"\s+", " ", "".join(chars)).strip()


def count_letters(text: str) -> int:
    return sum(1 for ch in text if ch.isalpha())


@dataclass
class Identification:
    language: str | None  # report code (ISO 639-3 as in FLORES) or None when undetermined
    confidence: float | None
    letters: int


class OutputLanguageIdentifier:
    """lingua detector restricted to ``candidates`` (codes); ``None`` candidates means all lingua languages."""

    def __init__(
        self,
        candidates: Iterable[str] | None,
        min_letters: int = 5,
        min_relative_distance: float = 0.0,
        low_accuracy: bool = False,
    ) -> None:
        lingua = require_lingua()
        if min_letters < 1:
            raise ValueError(f"min_letters must be >= 1, got {min_letters}.")
        if not 0.0 <= min_relative_distance < 1.0:
            raise ValueError(f"min_relative_distance must be in [0, 1), got {min_relative_distance}.")
        self.min_letters = min_letters
        if candidates is None:
            builder = lingua.LanguageDetectorBuilder.from_all_languages()
            self.candidates = sorted(code_for_lingua_name(lang.name) for lang in lingua.Language.all())
        else:
            members = []
            for code in candidates:
                info = resolve_language(code)
                if info.lingua is None:
                    continue  # cannot be identified; callers report this language as not identifiable
                members.append(getattr(lingua.Language, info.lingua))
            members = sorted(set(members), key=lambda m: m.name)
            if len(members) < 2:
                raise ValueError(
                    f"Language identification needs at least two identifiable candidate languages, got "
                    f"{[m.name for m in members]}: add some with extra_languages (--extra-languages) or use "
                    "all_languages (--all-languages)."
                )
            builder = lingua.LanguageDetectorBuilder.from_languages(*members)
            self.candidates = sorted(code_for_lingua_name(m.name) for m in members)
        builder = builder.with_minimum_relative_distance(min_relative_distance)
        if low_accuracy:
            builder = builder.with_low_accuracy_mode()
        self._detector = builder.build()
        self._codes: dict[str, str] = {}

    def _code(self, lang: Any) -> str:
        if lang.name not in self._codes:
            self._codes[lang.name] = code_for_lingua_name(lang.name)
        return self._codes[lang.name]

    def identify(self, text: str) -> Identification:
        return self.identify_many([text])[0]

    def identify_many(self, texts: Sequence[str]) -> list[Identification]:
        cleaned = [clean_for_identification(t or "") for t in texts]
        letters = [count_letters(t) for t in cleaned]
        todo = [i for i, n in enumerate(letters) if n >= self.min_letters]
        results = [Identification(None, None, n) for n in letters]
        if not todo:
            return results
        detected = self._detector.detect_languages_in_parallel_of([cleaned[i] for i in todo])
        for i, lang in zip(todo, detected, strict=True):
            if lang is None:
                continue
            conf = self._detector.compute_language_confidence(cleaned[i], lang)
            results[i] = Identification(self._code(lang), float(conf), letters[i])
        return results


# ----------------------------------------------------------------------------------------------------------
# Predictions files


@dataclass
class PredictionRecord:
    task: str
    language: LanguageInfo
    raw_language: str
    output: str
    id: str
    source: str  # "file:line"


def _first_key(row: dict[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        if key in row:
            return key
    return None


def find_prediction_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a directory contributes its ``*predictions*.jsonl`` files (else all ``*.jsonl``)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*predictions*.jsonl")) or sorted(p.rglob("*.jsonl"))
            if not found:
                raise FileNotFoundError(
                    f"No .jsonl files under {p}: pass the predictions files written by `langbridge eval`."
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(
                f"Predictions file {p} does not exist: pass a predictions .jsonl file or a directory."
            )
    return files


def read_predictions(paths: Sequence[str | Path]) -> list[PredictionRecord]:
    records: list[PredictionRecord] = []
    scored_only = 0
    for path in find_prediction_files(paths):
        for lineno, row in numbered_jsonl(path):
            where = f"{path}:{lineno}"
            lang_key = _first_key(row, LANGUAGE_KEYS)
            out_key = _first_key(row, OUTPUT_KEYS)
            if lang_key is None or out_key is None:
                missing = "a language key (language/lang)" if lang_key is None else ""
                if out_key is None:
                    missing += (" and " if missing else "") + "an output key (" + "/".join(OUTPUT_KEYS) + ")"
                raise ValueError(
                    f"{where}: record lacks {missing}; expected the predictions format of `langbridge eval` "
                    '({"task", "language", "output", "id", ...}).'
                )
            try:
                info = resolve_language(str(row[lang_key]))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
            output = row[out_key]
            if isinstance(output, list | dict):
                # Log-likelihood tasks (XCOPA) store choice scores, not generated text: nothing to identify.
                scored_only += 1
                continue
            records.append(
                PredictionRecord(
                    task=str(row.get("task") or path.stem),
                    language=info,
                    raw_language=str(row[lang_key]),
                    output="" if output is None else str(output),
                    id=str(row.get("id", lineno)),
                    source=where,
                )
            )
    if not records:
        why = (
            "they hold only log-likelihood tasks (choice scores, no generated text): pass generation tasks "
            "such as mgsm, msvamp, bbh or humaneval"
            if scored_only
            else "the files are empty"
        )
        raise ValueError(f"No generated answers found in {[str(p) for p in paths]}: {why}.")
    return records


# ----------------------------------------------------------------------------------------------------------
# Analysis


def categorize(detected: str | None, input_code: str) -> str:
    if detected is None:
        return "undetermined"
    if detected == input_code:
        return "input_language"
    if detected == "eng":
        return "english"
    return "other"


def _summarize(
    items: list[tuple[PredictionRecord, Identification, str]],
    info: LanguageInfo,
    n_examples: int,
    max_chars: int,
) -> dict[str, Any]:
    n = len(items)
    counts = Counter(cat for _, _, cat in items)
    others = Counter(ident.language for _, ident, cat in items if cat == "other")
    examples: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
    for rec, ident, cat in items:
        if len(examples[cat]) < n_examples:
            text = rec.output.strip()
            examples[cat].append(
                {
                    "id": rec.id,
                    "detected": ident.language,
                    "confidence": None if ident.confidence is None else round(ident.confidence, 3),
                    "output": text if len(text) <= max_chars else text[: max_chars - 1] + "…",
                }
            )
    return {
        "language": info.code,
        "name": info.name,
        "n": n,
        "identifiable": info.lingua is not None,
        "counts": {c: counts.get(c, 0) for c in CATEGORIES},
        "shares": {c: counts.get(c, 0) / n for c in CATEGORIES},
        "other_languages": dict(others.most_common()),
        "examples": examples,
    }


def analyze_output_language(
    records: Sequence[PredictionRecord],
    identifier: OutputLanguageIdentifier | None = None,
    *,
    extra_languages: Sequence[str] = (),
    all_languages: bool = False,
    min_letters: int = 5,
    n_examples: int = 3,
    max_example_chars: int = 300,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Identify every answer's language; return (report, per-record labels)."""
    from tqdm.auto import tqdm

    if identifier is None:
        candidates = (
            None if all_languages else {r.language.code for r in records} | {"eng"} | set(extra_languages)
        )
        identifier = OutputLanguageIdentifier(candidates, min_letters=min_letters)
    idents: list[Identification] = []
    with tqdm(
        total=len(records), desc="identifying answer languages", unit="answer", disable=not progress
    ) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            idents.extend(identifier.identify_many([r.output for r in chunk]))
            bar.update(len(chunk))

    by_task: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    overall: dict[str, list] = defaultdict(list)
    infos: dict[str, LanguageInfo] = {}
    labels = []
    for rec, ident in zip(records, idents, strict=True):
        code = rec.language.code
        cat = categorize(ident.language, code)
        infos.setdefault(code, rec.language)
        by_task[rec.task][code].append((rec, ident, cat))
        overall[code].append((rec, ident, cat))
        labels.append(
            {
                "task": rec.task,
                "id": rec.id,
                "language": code,
                "detected": ident.language,
                "confidence": ident.confidence,
                "letters": ident.letters,
                "category": cat,
                "source": rec.source,
            }
        )

    def order(codes: Iterable[str]) -> list[str]:
        return sorted(codes, key=lambda c: (c != "eng", c))

    try:
        lingua_version = metadata.version("lingua-language-detector")
    except metadata.PackageNotFoundError:
        lingua_version = None
    not_identifiable = sorted(c for c, i in infos.items() if i.lingua is None)
    report = {
        "identifier": {
            "package": "lingua-language-detector",
            "version": lingua_version,
            "candidate_languages": identifier.candidates,
            "min_letters": identifier.min_letters,
        },
        "categories": list(CATEGORIES),
        "category_definitions": {
            "input_language": "answer identified as the question's language (for English inputs: English)",
            "english": "answer in English although the question was not (the paper's 'accidental translation')",
            "other": "answer identified as another candidate language",
            "undetermined": f"fewer than {identifier.min_letters} letters after stripping numbers/math/code, "
            "or no confident decision",
        },
        "languages_not_identifiable": not_identifiable,
        "n_records": len(records),
        "by_task": {
            task: {c: _summarize(groups[c], infos[c], n_examples, max_example_chars) for c in order(groups)}
            for task, groups in sorted(by_task.items())
        },
        "overall": {
            c: _summarize(overall[c], infos[c], n_examples, max_example_chars) for c in order(overall)
        },
    }
    return report, labels


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ⏎ ")


def output_language_markdown(report: dict[str, Any], sources: Sequence[str] = ()) -> str:
    ident = report["identifier"]
    lines = ["# Output language of generated answers", ""]
    if sources:
        lines += ["Predictions: " + ", ".join(f"`{s}`" for s in sources), ""]
    lines += [
        f"Identifier: lingua-language-detector {ident['version']}, candidates "
        f"{', '.join(ident['candidate_languages'])}; answers with fewer than {ident['min_letters']} letters "
        "after stripping numbers/math/code are *undetermined*. 'English' = accidental translation "
        "(English answer to a non-English question).",
        "",
    ]
    if report["languages_not_identifiable"]:
        lines += [
            "Not identifiable by lingua (their answers can only be English/other/undetermined): "
            + ", ".join(report["languages_not_identifiable"]),
            "",
        ]
    sections = list(report["by_task"].items())
    if len(sections) > 1:
        sections.append(("all tasks", report["overall"]))
    for task, groups in sections:
        lines += [
            f"## {task}",
            "",
            "| input | n | input language | English | other | undetermined | other languages |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for code, g in groups.items():
            s = g["shares"]
            eng = "(= input)" if code == "eng" else _pct(s["english"])
            inp = _pct(s["input_language"]) if g["identifiable"] else "n/a"
            others = ", ".join(f"{k} {v}" for k, v in list(g["other_languages"].items())[:4]) or "-"
            lines.append(
                f"| {code} ({g['name']}) | {g['n']} | {inp} | {eng} | {_pct(s['other'])} | "
                f"{_pct(s['undetermined'])} | {others} |"
            )
        lines.append("")
    lines += ["## Examples", ""]
    for task, groups in report["by_task"].items():
        for code, g in groups.items():
            for cat in ("english", "other", "input_language"):
                for ex in g["examples"][cat][:2]:
                    lines.append(
                        f"- **{task} / {code} → {ex['detected']}** ({cat}, id {ex['id']}): {_md_escape(ex['output'])}"
                    )
    lines.append("")
    return "\n".join(lines)
