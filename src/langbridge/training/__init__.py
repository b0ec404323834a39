"""Training recipe: `langbridge train CONFIG.yaml [key=value ...]` or `train(load_config(path, overrides))`."""

from pathlib import Path
from typing import Any

from langbridge.training.config import ConfigError, TrainConfig, load_config
from langbridge.training.templates import TEMPLATES, PromptTemplate, get_template


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Run training; returns the path of the saved adapter (see `langbridge.training.recipe.train`).
    Imported lazily so `import langbridge.training` stays light."""
    from langbridge.training.recipe import train as _train

    return _train(config, resume=resume)


def dry_run(config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Build the model on the meta device and print parameter counts and memory estimates (see
    `langbridge.training.dryrun.dry_run` for `print_fn` and `world_size`)."""
    from langbridge.training.dryrun import dry_run as _dry_run

    return _dry_run(config, **kwargs)


__all__ = [
    "TEMPLATES",
    "ConfigError",
    "PromptTemplate",
    "TrainConfig",
    "dry_run",
    "get_template",
    "load_config",
    "train",
]
