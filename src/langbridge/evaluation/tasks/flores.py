"""FLORES-200 content tasks: does sentence content cross the bridge?

flores-x2en         the LM's loss on English sentence i given sentence i in language X (nats per English token,
                    lower is better). LangBridge: the encoder reads X, the LM reads REWRITE_INSTRUCTION after the
                    soft tokens, then the checkpoint's LM prompt; the LM alone reads X as text with the same
                    instruction in its prompt format. X = English measures reconstruction.
flores-x2en-chrf    the same prompt, greedy output (one line), chrF++ against the English reference (sacrebleu).
flores-continuation the loss on English sentence i+1 given sentence i in X (the next sentence of the same
                    article): both read a newline after the sentence (LangBridge: after its soft tokens).

Every condition scores the same English targets, so per-example values pair across models. Whole articles
(metadata_devtest.tsv URL) go to a dev (~20%) or a test portion by a hash of their URL: splits `dev` and `test`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..data import DataSource
from ..requests import GenerationRequest, LoglikelihoodRequest, PromptStyle
from ..task import BuildOptions, Example, Task, register_task

FLORES_CODES = {
    "eng": "eng_Latn",
    "deu": "deu_Latn",
    "spa": "spa_Latn",
    "fra": "fra_Latn",
    "rus": "rus_Cyrl",
    "jpn": "jpn_Jpan",
    "zho": "zho_Hans",
    "swh": "swh_Latn",
    "ben": "ben_Beng",
    "tel": "tel_Telu",
    "tha": "tha_Thai",
}
FLORES_LOW_RESOURCE = frozenset({"swh", "ben", "tel", "tha"})
METADATA = "metadata_devtest.tsv"
# One article in DEV_BUCKETS goes to the dev portion.
DEV_BUCKETS = 5
# The English-only recipe trains reconstruction with this instruction (configs/demo/*.yaml), so a bridge
# that carries content turns X into English here.
REWRITE_INSTRUCTION = "\nRewrite the text above in English."


def portion_of(doc: str) -> str:
    """'dev' or 'test' for an article, fixed by a hash of its URL (independent of seeds and of file order)."""
    bucket = int(hashlib.sha1(doc.encode("utf-8")).hexdigest(), 16) % DEV_BUCKETS
    return "dev" if bucket == 0 else "test"


def _lines(source: DataSource, *parts: str) -> list[str]:
    path = source.find("flores200", "devtest", *parts)
    if path is None:
        raise FileNotFoundError(
            f"FLORES-200 file {source.expected('flores200', 'devtest', *parts)} not found: put the devtest files "
            "(and metadata_devtest.tsv) there, or pass --data-dir / --task-dir flores200=PATH."
        )
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def read_documents(source: DataSource) -> list[str]:
    """The article (source URL) of every devtest line."""
    lines = _lines(source, METADATA)
    if not lines or not lines[0].startswith("URL"):
        raise ValueError(
            f"{source.expected('flores200', 'devtest', METADATA)}: expected a header row 'URL ...'."
        )
    return [line.split("\t", 1)[0] for line in lines[1:] if line.strip()]


def _sentences(source: DataSource, language: str) -> list[str]:
    if language not in FLORES_CODES:
        raise ValueError(f"FLORES language {language!r} is not one of {sorted(FLORES_CODES)}.")
    return _lines(source, f"{FLORES_CODES[language]}.devtest")


def _check_split(split: str) -> None:
    if split not in ("dev", "test"):
        raise ValueError(
            f"FLORES tasks have splits dev and test (portions of devtest by article), not {split!r}."
        )


def load_translation(source: DataSource, language: str, split: str) -> list[Example]:
    _check_split(split)
    text = _sentences(source, language)
    docs, english = read_documents(source), _sentences(source, "eng")
    if not len(docs) == len(text) == len(english):
        raise ValueError(
            f"FLORES {language}: {len(text)} lines but {len(docs)} metadata rows; use the original files."
        )
    return [
        Example(id=f"{split}-{i}", language=language, input={"text": text[i]}, gold=english[i])
        for i in range(len(docs))
        if portion_of(docs[i]) == split
    ]


def load_continuation(source: DataSource, language: str, split: str) -> list[Example]:
    _check_split(split)
    text = _sentences(source, language)
    docs, english = read_documents(source), _sentences(source, "eng")
    return [
        Example(id=f"{split}-{i}", language=language, input={"text": text[i]}, gold=english[i + 1])
        for i in range(len(docs) - 1)
        if docs[i] == docs[i + 1] and portion_of(docs[i]) == split
    ]


def _lm_alone_rewrite(style: PromptStyle, text: str) -> str:
    user = text + REWRITE_INSTRUCTION
    return style.wrap(user) if style.instruct else user + "\n"


def build_translation_ll(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> list[LoglikelihoodRequest]:
    text = example.input["text"]
    return [
        LoglikelihoodRequest(
            context=text,
            continuation=example.gold,
            lm_instruction=REWRITE_INSTRUCTION,
            full_context=_lm_alone_rewrite(style, text),
        )
    ]


def build_translation_generate(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> GenerationRequest:
    text = example.input["text"]
    return GenerationRequest(
        encoder_text=text,
        full_prompt=_lm_alone_rewrite(style, text),
        lm_instruction=REWRITE_INSTRUCTION,
        stop=("\n",),
        max_new_tokens=options.max_new_tokens or 96,
    )


def build_continuation(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> list[LoglikelihoodRequest]:
    text = example.input["text"]
    # Plain continuation in both conditions, no chat turn in between: a newline after the sentence, read as
    # text by the LM alone and after the soft tokens by LangBridge.
    return [
        LoglikelihoodRequest(
            context=text, continuation=example.gold, lm_prompt="\n", full_context=text + "\n"
        )
    ]


def nats_per_token(output: list[dict], example: Example) -> float:
    (result,) = output
    return -result["logprob"] / result["tokens"]


def chrf(output: str, example: Example) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(output.strip(), [example.gold], word_order=2).score


def _value(extracted: float, example: Example) -> float:
    return extracted


def _flores_task(
    name: str,
    kind: str,
    load: Callable[[DataSource, str, str], list[Example]],
    build: Callable[..., Any],
    extract: Callable[[Any, Example], Any],
    score: Callable[[Any, Example], float],
    metric: str,
    description: str,
) -> Task:
    return Task(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        languages=tuple(FLORES_CODES),
        low_resource=FLORES_LOW_RESOURCE,
        load=load,
        build=build,
        extract=extract,
        score=score,
        splits=("test", "dev"),
        metric=metric,
        description=description,
        data_help="flores200/devtest/<code>.devtest and metadata_devtest.tsv (local files only)",
    )


register_task(
    _flores_task(
        "flores-x2en",
        "loglikelihood",
        load_translation,
        build_translation_ll,
        nats_per_token,
        _value,
        "nats_per_token",
        "FLORES X -> English: loss on the English sentence given it in X (nats/token, lower is better).",
    )
)
register_task(
    _flores_task(
        "flores-x2en-chrf",
        "generate",
        load_translation,
        build_translation_generate,
        lambda output, example: output.strip(),
        chrf,
        "chrf",
        "FLORES X -> English: chrF++ of the greedy one-line output against the English reference.",
    )
)
register_task(
    _flores_task(
        "flores-continuation",
        "loglikelihood",
        load_continuation,
        build_continuation,
        nats_per_token,
        _value,
        "nats_per_token",
        "FLORES continuation: loss on the next English sentence of the article (nats/token, lower is better).",
    )
)
