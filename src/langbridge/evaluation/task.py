"""What a task is: `Task`, `Example`, `BuildOptions`, and `register_task`, which adds one to `TASKS`.

The built-in benchmarks (`tasks/`) import this module, not `registry`: the registry looks tasks up and imports
the built-in ones on first use, so the import runs one way (registry -> tasks -> task). A benchmark is one
`Task` built by a small factory:

@register_task
def my_task() -> Task:
    return Task(name="my-task", kind="generate", languages=("en", "sw"), low_resource={"sw"},
                load=..., build=..., extract=..., score=...)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .data import DataSource
from .requests import GenerationRequest, LoglikelihoodRequest

__all__ = ["Example", "BuildOptions", "Task", "register_task", "TASKS"]

TaskKind = Literal["generate", "loglikelihood", "code"]


@dataclass
class Example:
    """One benchmark item. `input` is what gets written to the predictions file; `meta` holds what scoring
    needs but the file does not (unit tests, choices)."""

    id: str
    language: str
    input: dict[str, Any]
    gold: Any
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildOptions:
    """Run-level knobs a prompt builder may read."""

    num_fewshot: int | None = None
    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def sampling(self) -> dict[str, Any]:
        return {"do_sample": self.do_sample, "temperature": self.temperature, "top_p": self.top_p}


@dataclass(frozen=True)
class Task:
    """A benchmark.

    load(source, language, split) -> examples.
    fewshot(source, language) -> exemplars; called for base-LM (few-shot) prompt styles, and for instruct
        styles too when `fewshot_in_instruct` (BBH keeps its 3-shot prompt for every LM).
    build(example, style, options, shots) -> one GenerationRequest (generate, code) or a list of
        LoglikelihoodRequest, one per choice (loglikelihood).
    extract(output, example) -> the answer (output: generated text, or the choice log-likelihoods).
    score(extracted, example) -> correct?  (code tasks: score_many runs the programs, batched).
    subtask(example) -> subtask name when the language score is a macro average over subtasks (BBH).
    """

    name: str
    kind: TaskKind
    languages: tuple[str, ...]
    low_resource: frozenset[str]
    load: Callable[[DataSource, str, str], list[Example]]
    build: Callable[..., GenerationRequest | list[LoglikelihoodRequest]]
    extract: Callable[[Any, Example], Any]
    score: Callable[[Any, Example], bool] | None = None
    score_many: Callable[[Sequence[Any], Sequence[Example]], list[tuple[bool, dict]]] | None = None
    fewshot: Callable[[DataSource, str], Any] | None = None
    fewshot_in_instruct: bool = False
    subtask: Callable[[Example], str] | None = None
    splits: tuple[str, ...] = ("test",)
    metric: str = "accuracy"
    description: str = ""
    data_help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("generate", "loglikelihood", "code"):
            raise ValueError(
                f"Task {self.name!r}: kind must be generate, loglikelihood or code, not {self.kind!r}."
            )
        if self.score is None and self.score_many is None:
            raise ValueError(f"Task {self.name!r} needs `score` or `score_many`.")
        unknown = set(self.low_resource) - set(self.languages)
        if unknown:
            raise ValueError(
                f"Task {self.name!r}: low_resource {sorted(unknown)} not among languages {self.languages}."
            )
        object.__setattr__(self, "low_resource", frozenset(self.low_resource))


TASKS: dict[str, Task] = {}


def register_task(factory: Callable[[], Task] | Task) -> Callable[[], Task] | Task:
    """Register a task (or a zero-argument factory returning one, usable as a decorator)."""
    task = factory() if callable(factory) and not isinstance(factory, Task) else factory
    if not isinstance(task, Task):
        raise TypeError(
            f"register_task expects a Task or a factory returning one, got {type(task).__name__}."
        )
    if task.name in TASKS and TASKS[task.name] is not task:
        raise ValueError(f"A task named {task.name!r} is already registered.")
    TASKS[task.name] = task
    return factory
