"""The task registry: look tasks up by name (`get_task`, `available_tasks`); the built-in benchmarks of
`tasks/` register themselves on first lookup.

The definitions (`Task`, `Example`, `BuildOptions`, `register_task`, `TASKS`) live in `task.py` and are
re-exported here; `tasks/` imports them from there, so no import runs back from a task to the registry.
"""

from __future__ import annotations

from .task import TASKS, BuildOptions, Example, Task, TaskKind, register_task

__all__ = [
    "Example",
    "BuildOptions",
    "Task",
    "TaskKind",
    "register_task",
    "get_task",
    "available_tasks",
    "TASKS",
]


def _ensure_builtin() -> None:
    from . import tasks  # noqa: F401  (importing registers the built-in benchmarks)


def available_tasks() -> list[str]:
    _ensure_builtin()
    return sorted(TASKS)


def get_task(name: str) -> Task:
    _ensure_builtin()
    key = name.strip().lower().replace("_", "-")
    if key not in TASKS:
        raise KeyError(f"Unknown task {name!r}; available: {', '.join(sorted(TASKS))}.")
    return TASKS[key]
