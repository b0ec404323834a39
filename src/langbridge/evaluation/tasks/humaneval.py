"""HumanEval (Chen et al. 2021) and HumanEval-MT (LangBridge: docstrings translated to sw, bn, pa, te, ur;
`*_anon` variants rename the function to `func`). Code completion, unit tests run in the sandbox.

Protocol (the paper's bigcode-evaluation-harness setup): the prompt is stripped of surrounding whitespace,
the model continues it (a LangBridge encoder reads the prompt and the LM writes the body), the output is cut
at the first top-level stop sequence, and prompt + completion + tests run. Greedy decoding gives pass@1;
sampling n completions gives pass@k. Code is completion-style for every LM: no chat template.
"""

from __future__ import annotations

import os

from ...utils import iter_jsonl
from ..data import DataSource
from ..requests import GenerationRequest, PromptStyle
from ..scoring import truncate_at_stop
from ..task import BuildOptions, Example, Task, register_task

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```")
MAX_NEW_TOKENS = 512
TIMEOUT_S = 10.0
MT_FILE_NAMES = {
    "en": "english",
    "sw": "swahili",
    "bn": "bengali",
    "pa": "punjabi",
    "te": "telugu",
    "ur": "urdu",
}
MT_LANGUAGES = tuple(MT_FILE_NAMES) + tuple(f"{lang}_anon" for lang in MT_FILE_NAMES)
MT_LOW_RESOURCE = frozenset(lang for lang in MT_LANGUAGES if not lang.startswith("en"))


def _examples(rows: list[dict], language: str, where: str) -> list[Example]:
    examples = []
    for i, r in enumerate(rows):
        missing = {"task_id", "prompt", "test", "entry_point"} - set(r)
        if missing:
            raise ValueError(
                f"{where} row {i} lacks {sorted(missing)}; HumanEval rows need task_id, prompt, test, entry_point."
            )
        examples.append(
            Example(
                id=r["task_id"],
                language=language,
                input={"task_id": r["task_id"], "prompt": r["prompt"]},
                gold=r.get("canonical_solution"),
                meta={"test": r["test"], "entry_point": r["entry_point"]},
            )
        )
    return examples


def load_humaneval(source: DataSource, language: str, split: str) -> list[Example]:
    path = source.find("humaneval", "HumanEval.jsonl.gz") or source.find("humaneval", "HumanEval.jsonl")
    if path is not None:
        return _examples(list(iter_jsonl(path)), language, str(path))
    rows = source.hub(
        "HumanEval",
        source.expected("humaneval", "HumanEval.jsonl.gz"),
        "openai/openai_humaneval",
        split="test",
    )
    return _examples(rows, language, "openai/openai_humaneval")


def load_humaneval_mt(source: DataSource, language: str, split: str) -> list[Example]:
    base, _, anon = language.partition("_")
    name = f"humaneval_{MT_FILE_NAMES[base]}{'_anon' if anon else ''}.json"
    path = source.find("humaneval_mt", name)
    if path is None:
        from ..data import DataNotFoundError

        raise DataNotFoundError(
            f"HumanEval-MT ({language}): {source.expected('humaneval_mt', name)} not found. HumanEval-MT is not on "
            "the hub: copy data/humaneval/humaneval_<language>[_anon].json from github.com/kaistAI/LangBridge into "
            "that folder (JSON lines despite the .json name), or pass --data-dir / --task-dir humaneval-mt=DIR."
        )
    return _examples(list(iter_jsonl(path)), language, str(path))


def build_code(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> GenerationRequest:
    prompt = example.input["prompt"].strip()
    return GenerationRequest(
        encoder_text=prompt,
        full_prompt=prompt,
        stop=STOP_SEQUENCES,
        max_new_tokens=options.max_new_tokens or MAX_NEW_TOKENS,
        **options.sampling(),
    )


def extract_completion(output: str, example: Example) -> str:
    return truncate_at_stop(output, STOP_SEQUENCES)


def run_tests(completions, examples, max_workers: int | None = None) -> list[tuple[bool, dict]]:
    """Run prompt + completion + tests for each pair in the sandbox, in parallel."""
    from ..sandbox import humaneval_program, run_many

    jobs = [
        {
            "program": humaneval_program(
                ex.input["prompt"].strip(), comp, ex.meta["test"], ex.meta["entry_point"]
            ),
            "timeout_s": TIMEOUT_S,
        }
        for comp, ex in zip(completions, examples, strict=True)
    ]
    workers = max_workers or max(1, min(8, os.cpu_count() or 1))
    results = run_many(jobs, max_workers=workers)
    return [(r.passed, {"status": r.status, "detail": r.detail}) for r in results]


def _task(name: str, languages, low, load, description: str, data_help: str) -> Task:
    return Task(
        name=name,
        kind="code",
        languages=tuple(languages),
        low_resource=frozenset(low),
        load=load,
        build=build_code,
        extract=extract_completion,
        score_many=run_tests,
        metric="pass@1",
        description=description,
        data_help=data_help,
    )


@register_task
def humaneval() -> Task:
    return _task(
        "humaneval",
        ("en",),
        (),
        load_humaneval,
        "HumanEval: 164 Python problems; pass@1 (greedy) and pass@k (sampled).",
        "humaneval/HumanEval.jsonl.gz; hub: openai/openai_humaneval",
    )


@register_task
def humaneval_mt() -> Task:
    return _task(
        "humaneval-mt",
        MT_LANGUAGES,
        MT_LOW_RESOURCE,
        load_humaneval_mt,
        "HumanEval-MT: HumanEval with docstrings in en, sw, bn, pa, te, ur (+ _anon: function renamed to func).",
        "humaneval_mt/humaneval_{english,swahili,bengali,punjabi,telugu,urdu}{,_anon}.json (JSON lines)",
    )
