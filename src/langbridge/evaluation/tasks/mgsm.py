"""MGSM (Shi et al. 2022) and MSVAMP (Chen et al. 2023): grade-school math, accuracy of the last number.

Protocol (LangBridge paper): instruction-tuned LMs answer zero-shot in their instruction format ("Question: ..."
with the question word in the question's language, generation stops at the next question word); base LMs get 8
native-language chain-of-thought exemplars ("Question: ... / Step-by-Step Answer: ...", translated) and continue
after the native "Step-by-Step Answer:". The answer is the last number of the output, normalized.
"""

from __future__ import annotations

import csv
import json
import re

from ..data import DataNotFoundError, DataSource
from ..requests import GenerationRequest, PromptStyle, make_generation
from ..scoring import extract_last_number, numbers_equal
from ..task import BuildOptions, Example, Task, register_task

MGSM_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
# Low-resource = under 0.005% of Llama 2's pretraining data, as the paper groups them.
MGSM_LOW_RESOURCE = frozenset({"bn", "sw", "te", "th"})
MSVAMP_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "th", "zh")
MSVAMP_LOW_RESOURCE = frozenset({"bn", "sw", "th"})
MSVAMP_FILE_NAMES = {
    "bn": "Bengali",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "ja": "Japanese",
    "ru": "Russian",
    "sw": "Swahili",
    "th": "Thai",
    "zh": "Chinese",
}
# The question word of each language, as MGSM's exemplars write it. Zero-shot prompts start with it (as the
# paper's evaluation does) and generation stops when the model starts a new question with it.
QUESTION_WORDS = {
    "bn": "প্রশ্ন:",
    "de": "Frage:",
    "en": "Question:",
    "es": "Pregunta:",
    "fr": "Question :",
    "ja": "問題：",
    "ru": "Задача:",
    "sw": "Swali:",
    "te": "ప్రశ్న:",
    "th": "โจทย์:",
    "zh": "问题：",
}
MGSM_HUB = "juletxara/mgsm"
MSVAMP_HUB = "Mathoctopus/MSVAMP"
DEFAULT_SHOTS = 8
MAX_NEW_TOKENS = 512


def load_mgsm(source: DataSource, language: str, split: str) -> list[Example]:
    path = source.find("mgsm", f"mgsm_{language}.tsv")
    if path is not None:
        with open(path, encoding="utf-8", newline="") as f:
            # Questions contain quote characters: the TSV is not quoted.
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
        bad = [i for i, r in enumerate(rows) if len(r) != 2]
        if bad:
            raise ValueError(
                f"{path}: rows {bad[:5]} do not have 2 tab-separated columns (question, answer)."
            )
        pairs = [(q, a) for q, a in rows]
    else:
        hub_rows = source.hub(
            f"MGSM ({language})",
            source.expected("mgsm", f"mgsm_{language}.tsv"),
            MGSM_HUB,
            name=language,
            split="test",
        )
        pairs = [(r["question"], str(r["answer_number"])) for r in hub_rows]
    return [
        Example(id=f"{i:04d}", language=language, input={"question": q}, gold=a.strip())
        for i, (q, a) in enumerate(pairs)
    ]


def load_msvamp(source: DataSource, language: str, split: str) -> list[Example]:
    name = f"test_{MSVAMP_FILE_NAMES[language]}.json"
    path = source.find("msvamp", name)
    if path is not None:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            records = json.loads(text)  # also accept one JSON array
    else:
        records = source.hub(
            f"MSVAMP ({language})",
            source.expected("msvamp", name),
            MSVAMP_HUB,
            data_files={"test": name},
            split="test",
        )
    examples = []
    for i, r in enumerate(records):
        missing = {"m_query", "response"} - set(r)
        if missing:
            raise ValueError(
                f"MSVAMP {name} record {i} lacks {sorted(missing)}; expected m_query, response, query."
            )
        item = {"question": r["m_query"]}
        if "query" in r:
            item["english"] = r["query"]
        examples.append(
            Example(id=f"{i:04d}", language=language, input=item, gold=str(r["response"]).strip())
        )
    return examples


def _split_prefix(text: str) -> tuple[str, str]:
    """'Question: Roger has...' -> ('Question:', 'Roger has...'); handles the full-width colon (ja, zh)."""
    m = re.match(r"^(.*?[:：])\s*(.*)$", text, flags=re.S)
    if not m:
        raise ValueError(f"Exemplar {text[:40]!r} has no 'Prefix:' to split on.")
    return m.group(1), m.group(2)


def mgsm_exemplars(source: DataSource, language: str) -> list[dict[str, str]]:
    """Native-language chain-of-thought exemplars: [{'q': 'Question: ...', 'a': 'Step-by-Step Answer: ...'}]."""
    path = source.find("mgsm", "mgsm_exemplars.json")
    if path is not None:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)["MGSM_EXEMPLARS"]
        if language not in table:
            raise DataNotFoundError(f"{path} has no exemplars for {language!r}; it has {sorted(table)}.")
        shots = table[language]
        return [shots[k] for k in sorted(shots, key=int)]
    rows = source.hub(
        f"MGSM exemplars ({language})",
        source.expected("mgsm", "mgsm_exemplars.json"),
        MGSM_HUB,
        name=language,
        split="train",
    )
    return [{"q": r["question"], "a": r["answer"]} for r in rows]


def build_math(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> GenerationRequest:
    question = example.input["question"]
    max_new = options.max_new_tokens or MAX_NEW_TOKENS
    if style.instruct:
        word = QUESTION_WORDS[example.language]
        sep = " " if word.endswith(":") else ""
        return make_generation(
            style, f"{word}{sep}{question}", stop=(word,), max_new_tokens=max_new, **options.sampling()
        )
    if not shots:
        raise ValueError(
            "Base-LM (few-shot) MGSM/MSVAMP prompts need the native exemplars (mgsm_exemplars.json)."
        )
    k = DEFAULT_SHOTS if options.num_fewshot is None else options.num_fewshot
    q_prefix, _ = _split_prefix(shots[0]["q"])
    a_prefix, _ = _split_prefix(shots[0]["a"])
    blocks = [f"{s['q']}\n{s['a']}" for s in shots[:k]]
    sep = " " if q_prefix.endswith(":") else ""
    blocks.append(f"{q_prefix}{sep}{question}\n")
    # Stop where the model starts the next exemplar.
    return make_generation(
        style,
        "\n\n".join(blocks),
        answer_prefix=a_prefix,
        stop=("\n\n", q_prefix),
        max_new_tokens=max_new,
        **options.sampling(),
    )


def extract_math(output: str, example: Example) -> str | None:
    return extract_last_number(output)


def score_math(extracted: str | None, example: Example) -> bool:
    return numbers_equal(extracted, example.gold)


@register_task
def mgsm() -> Task:
    return Task(
        name="mgsm",
        kind="generate",
        languages=MGSM_LANGUAGES,
        low_resource=MGSM_LOW_RESOURCE,
        load=load_mgsm,
        fewshot=mgsm_exemplars,
        build=build_math,
        extract=extract_math,
        score=score_math,
        description="MGSM: 250 grade-school math questions in 11 languages; accuracy of the last number.",
        data_help="mgsm/mgsm_<lang>.tsv (question TAB answer) and mgsm/mgsm_exemplars.json; hub: juletxara/mgsm",
    )


@register_task
def msvamp() -> Task:
    return Task(
        name="msvamp",
        kind="generate",
        languages=MSVAMP_LANGUAGES,
        low_resource=MSVAMP_LOW_RESOURCE,
        load=load_msvamp,
        fewshot=mgsm_exemplars,
        build=build_math,
        extract=extract_math,
        score=score_math,
        description="MSVAMP: 1000 SVAMP math questions in 10 languages; accuracy of the last number.",
        data_help=(
            "msvamp/test_<Language>.json (JSON lines with m_query, response, query; Language = Bengali, Chinese, "
            "English, French, German, Japanese, Russian, Spanish, Swahili, Thai); hub: Mathoctopus/MSVAMP. "
            "Few-shot (base LMs) also needs mgsm/mgsm_exemplars.json."
        ),
    )
