"""Evaluation: `langbridge eval` / `evaluate(...)` on MGSM, MSVAMP, XCOPA, HumanEval(-MT), BBH(-BN), and
`langbridge compare` for LM-alone vs LangBridge tables.

Tasks are declarative (`registry.Task`) and registered by name; models are `EvalModel` backends
(`LangBridgeBackend`, `CausalLMBackend`, or anything with the same three methods).
"""

from .backends import CausalLMBackend, EvalModel, LangBridgeBackend, load_backend
from .data import DataNotFoundError, DataSource
from .registry import BuildOptions, Example, Task, available_tasks, get_task, register_task
from .report import compare, load_results, results_markdown
from .requests import (
    INSTRUCTION_TEMPLATES,
    GenerationRequest,
    LoglikelihoodRequest,
    PromptStyle,
    make_generation,
)
from .runner import evaluate, read_predictions
from .scoring import (
    bbh_exact_match,
    extract_bbh_answer,
    extract_bbh_bn_answer,
    extract_last_number,
    numbers_equal,
)

__all__ = [
    "INSTRUCTION_TEMPLATES",
    "BuildOptions",
    "CausalLMBackend",
    "DataNotFoundError",
    "DataSource",
    "EvalModel",
    "Example",
    "GenerationRequest",
    "LangBridgeBackend",
    "LoglikelihoodRequest",
    "PromptStyle",
    "Task",
    "available_tasks",
    "bbh_exact_match",
    "compare",
    "evaluate",
    "extract_bbh_answer",
    "extract_bbh_bn_answer",
    "extract_last_number",
    "get_task",
    "load_backend",
    "load_results",
    "make_generation",
    "numbers_equal",
    "read_predictions",
    "register_task",
    "results_markdown",
]
