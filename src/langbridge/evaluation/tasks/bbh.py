"""BIG-Bench Hard (Suzgun et al. 2022) and the LangBridge paper's Bengali BBH (BBH-BN).

BBH: 27 tasks, 3-shot chain of thought with the official cot-prompts ("Q: ... A: Let's think step by step.
... So the answer is X."); the answer is the text after the last "So the answer is"; exact match. The
language score is the macro average over tasks.

BBH-BN: 14 tasks with each question in English and Bengali. Its data is not public: put one CSV per task in
a folder (`--task-dir bbh-bn=DIR`, or <data-dir>/bbh_bn/) named `<task>-en-bn.csv` (or `<task>.csv`) with
columns
    input_en, options_en   the question and its answer options ("(A) ...\n(B) ...") in English
    input_bn, options_bn   the same in Bengali
    target_en              the gold answer as in BBH: "(A)", "Yes"/"No", "valid"/"invalid", ...
(`date_understanding.csv`, the name in the original folder, is accepted too.) Prompting follows the paper's
BBH-BN evaluation: zero-shot, an instruction to pick an option, the question and options, then "Step-by-step
answer:" (instruction-tuned LMs, in their instruction format) or "Answer:" (base LMs); the answer is the last
option letter / Yes-No / valid-invalid in the output (`scoring.extract_bbh_bn_answer`), exact match.
"""

from __future__ import annotations

import csv
import json

from ..data import DataNotFoundError, DataSource
from ..requests import GenerationRequest, PromptStyle, make_generation
from ..scoring import bbh_exact_match, extract_bbh_answer, extract_bbh_bn_answer
from ..task import BuildOptions, Example, Task, register_task

BBH_TASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)
BBH_BN_TASKS = (
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "formal_fallacies",
    "logical_deductions_five",
    "logical_deductions_seven",
    "logical_deductions_three",
    "navigate",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "web_of_lies",
)
BBH_BN_COLUMNS = ("input_en", "options_en", "input_bn", "options_bn", "target_en")
COT_TRIGGER = "A: Let's think step by step."
MAX_NEW_TOKENS = 512
BN_INSTRUCTION = (
    "Choose an answer from the choices provided. All questions are answerable.\n"
    "You must choose an option. If all options seem wrong, choose the option that is closest to the answer.\n"
    "At the end output\n###Final answer: {answer choice}\n\n"
)


def load_bbh(source: DataSource, language: str, split: str) -> list[Example]:
    examples = []
    for name in BBH_TASKS:
        path = source.find("bbh", "bbh", f"{name}.json")
        if path is not None:
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)["examples"]
        else:
            rows = source.hub(
                f"BBH ({name})",
                source.expected("bbh", "bbh", f"{name}.json"),
                "lukaemon/bbh",
                name=name,
                split="test",
            )
        for i, r in enumerate(rows):
            examples.append(
                Example(
                    id=f"{name}-{i:03d}",
                    language=language,
                    input={"task": name, "question": r["input"]},
                    gold=r["target"],
                    meta={"subtask": name},
                )
            )
    return examples


def bbh_cot_prompts(source: DataSource, language: str) -> dict[str, str]:
    """The 3-shot CoT prompt of every BBH task (without the canary header)."""
    prompts = {}
    for name in BBH_TASKS:
        path = source.find("bbh", "cot-prompts", f"{name}.txt")
        if path is None:
            raise DataNotFoundError(
                f"BBH chain-of-thought prompt missing: {source.expected('bbh', 'cot-prompts', f'{name}.txt')}. "
                "Copy cot-prompts/*.txt from github.com/suzgunmirac/BIG-Bench-Hard there (or pass --data-dir)."
            )
        text = path.read_text(encoding="utf-8")
        _, sep, body = text.partition("-----\n")
        prompts[name] = (body if sep else text).strip()
    return prompts


def build_bbh(
    example: Example, style: PromptStyle, options: BuildOptions, shots: dict | None
) -> GenerationRequest:
    if shots is None:
        raise ValueError("BBH prompts need the cot-prompts (pass the BBH data folder).")
    name = example.meta["subtask"]
    user = f"{shots[name]}\n\nQ: {example.input['question']}"
    max_new = options.max_new_tokens or MAX_NEW_TOKENS
    # Exemplars are separated by blank lines and never contain one: a blank line ends the answer.
    return make_generation(
        style,
        user,
        answer_prefix="\n" + COT_TRIGGER,
        instruct_prefix=COT_TRIGGER + "\n",
        stop=("\n\nQ:", "\n\n"),
        max_new_tokens=max_new,
        **options.sampling(),
    )


def _bn_file(source: DataSource, name: str):
    for candidate in (f"{name}-en-bn.csv", f"{name}.csv"):
        path = source.find("bbh_bn", candidate)
        if path is not None:
            return path
    raise DataNotFoundError(
        f"BBH-BN ({name}): {source.expected('bbh_bn', f'{name}-en-bn.csv')} not found. The Bengali BBH is not "
        f"public: put <task>-en-bn.csv files (columns {', '.join(BBH_BN_COLUMNS)}) for the tasks "
        f"{', '.join(BBH_BN_TASKS)} in one folder and pass --task-dir bbh-bn=DIR (or <data-dir>/bbh_bn/)."
    )


def load_bbh_bn(source: DataSource, language: str, split: str) -> list[Example]:
    examples = []
    for name in BBH_BN_TASKS:
        path = _bn_file(source, name)
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        missing = set(BBH_BN_COLUMNS) - set(rows[0] if rows else BBH_BN_COLUMNS)
        if missing or not rows:
            raise ValueError(
                f"{path}: needs columns {', '.join(BBH_BN_COLUMNS)}; missing {sorted(missing) or 'all rows'}."
            )
        for i, r in enumerate(rows):
            examples.append(
                Example(
                    id=f"{name}-{i:03d}",
                    language=language,
                    input={
                        "task": name,
                        "question": r[f"input_{language}"],
                        "options": r[f"options_{language}"],
                    },
                    gold=r["target_en"].strip(),
                    meta={"subtask": name},
                )
            )
    return examples


def build_bbh_bn(
    example: Example, style: PromptStyle, options: BuildOptions, shots: list | None
) -> GenerationRequest:
    cue = "Step-by-step answer:" if style.instruct else "Answer:"
    user = f"{BN_INSTRUCTION}{example.input['question']}\n{example.input['options']}\n{cue}"
    return make_generation(
        style, user, max_new_tokens=options.max_new_tokens or MAX_NEW_TOKENS, **options.sampling()
    )


def extract_bbh(output: str, example: Example) -> str:
    return extract_bbh_answer(output, example.gold)


def extract_bbh_bn(output: str, example: Example) -> str:
    return extract_bbh_bn_answer(output, example.gold)


def score_bbh(extracted: str, example: Example) -> bool:
    return bbh_exact_match(extracted, example.gold)


@register_task
def bbh() -> Task:
    return Task(
        name="bbh",
        kind="generate",
        languages=("en",),
        low_resource=frozenset(),
        load=load_bbh,
        fewshot=bbh_cot_prompts,
        fewshot_in_instruct=True,
        build=build_bbh,
        extract=extract_bbh,
        score=score_bbh,
        subtask=lambda ex: ex.meta["subtask"],
        description="BIG-Bench Hard: 27 tasks, 3-shot CoT, exact match; macro average over tasks.",
        data_help="bbh/bbh/<task>.json and bbh/cot-prompts/<task>.txt (the CoT prompts are required locally)",
    )


@register_task
def bbh_bn() -> Task:
    return Task(
        name="bbh-bn",
        kind="generate",
        languages=("en", "bn"),
        low_resource=frozenset({"bn"}),
        load=load_bbh_bn,
        build=build_bbh_bn,
        extract=extract_bbh_bn,
        score=score_bbh,
        subtask=lambda ex: ex.meta["subtask"],
        description="BBH-BN: 14 BBH tasks in English and Bengali, zero-shot CoT; macro average over tasks.",
        data_help=f"bbh_bn/<task>-en-bn.csv with columns {', '.join(BBH_BN_COLUMNS)} (not public)",
    )
