"""XCOPA (Ponti et al. 2020): pick the more plausible cause/effect by log-likelihood.

Context = the premise without its final punctuation + the language's "because"/"therefore" connector;
each choice (first letter lower-cased) is scored as the continuation; the higher summed log-probability
wins. Both prompt styles use this plain-text format, as the paper's harness does for COPA-style scoring.
"""

from __future__ import annotations

import json
import unicodedata

from ..data import DataSource
from ..requests import LoglikelihoodRequest, PromptStyle
from ..task import BuildOptions, Example, Task, register_task

XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
# Not among Llama 2's >0.005% pretraining languages (the paper's grouping); id, it, vi, zh are.
XCOPA_LOW_RESOURCE = frozenset({"et", "ht", "qu", "sw", "ta", "th", "tr"})
# (cause, effect) connectors of each language, as used by lm-evaluation-harness's XCOPA.
CONNECTORS = {
    "et": ("sest", "seetõttu"),
    "ht": ("poukisa", "donk sa"),
    "id": ("karena", "maka"),
    "it": ("perché", "quindi"),
    "qu": ("imataq", "chaymi"),
    "sw": ("kwa sababu", "kwa hiyo"),
    "ta": ("காரணமாக", "எனவே"),
    "th": ("เพราะ", "ดังนั้น"),
    "tr": ("çünkü", "bu yüzden"),
    "vi": ("bởi vì", "vì vậy"),
    "zh": ("因为", "所以"),
    "en": ("because", "therefore"),
}
SPLIT_FILES = {"test": "test", "validation": "val", "val": "val"}
HUB_SPLITS = {"test": "test", "validation": "validation", "val": "validation"}


def load_xcopa(source: DataSource, language: str, split: str) -> list[Example]:
    if split not in SPLIT_FILES:
        raise ValueError(f"XCOPA has splits test and val (validation), not {split!r}.")
    rel = ("data", language, f"{SPLIT_FILES[split]}.{language}.jsonl")
    path = source.find("xcopa", *rel)
    if path is not None:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        rows = source.hub(
            f"XCOPA ({language}, {split})",
            source.expected("xcopa", *rel),
            "cambridgeltl/xcopa",
            name=language,
            split=HUB_SPLITS[split],
        )
    examples = []
    for i, r in enumerate(rows):
        if r.get("question") not in ("cause", "effect"):
            raise ValueError(
                f"XCOPA {language} row {i}: question must be cause or effect, got {r.get('question')!r}."
            )
        examples.append(
            Example(
                id=f"{split}-{r.get('idx', i)}",
                language=language,
                input={k: r[k] for k in ("premise", "choice1", "choice2", "question")},
                gold=int(r["label"]),
            )
        )
    return examples


def _drop_final_punct(text: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text and unicodedata.category(text[-1]).startswith("P") else text


def _lower_first(text: str) -> str:
    text = text.strip()
    return text[:1].lower() + text[1:]


def build_xcopa(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> list[LoglikelihoodRequest]:
    cause, effect = CONNECTORS[example.language]
    connector = cause if example.input["question"] == "cause" else effect
    context = f"{_drop_final_punct(example.input['premise'])} {connector}"
    return [
        LoglikelihoodRequest(context=context, continuation=" " + _lower_first(example.input[c]))
        for c in ("choice1", "choice2")
    ]


def extract_choice(loglikelihoods: list[float], example: Example) -> int:
    # Ties go to the first choice, like numpy.argmax in the harness.
    return max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))


def score_choice(predicted: int, example: Example) -> bool:
    return predicted == example.gold


@register_task
def xcopa() -> Task:
    return Task(
        name="xcopa",
        kind="loglikelihood",
        languages=XCOPA_LANGUAGES,
        low_resource=XCOPA_LOW_RESOURCE,
        load=load_xcopa,
        build=build_xcopa,
        extract=extract_choice,
        score=score_choice,
        splits=("test", "val"),
        description="XCOPA: causal commonsense in 11 languages; log-likelihood of the two choices, accuracy.",
        data_help="xcopa/data/<lang>/{test,val}.<lang>.jsonl; hub: cambridgeltl/xcopa",
    )
