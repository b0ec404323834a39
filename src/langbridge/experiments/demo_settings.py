"""What decides the demo's numbers: `DemoSettings`, the `--quick` preset, and the training recipes and ablation
variants, which ship as YAML package data in `langbridge/experiments/configs/` (read with importlib.resources,
so they are found in an installed package as well as in the repository; `configs/demo/RECIPE.yaml` in the
repository links to the same files).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from langbridge.configuration import DEFAULT_BRIDGE_TYPE
from langbridge.utils import atomic_write_text

RECIPES = ("aligned", "labeled", "unlabeled")
# FLORES languages (ISO 639-3); the low-resource set is the FLORES tasks' (MGSM's bn, sw, te, th).
FLORES_LANGUAGES = ("eng", "spa", "deu", "zho", "swh", "ben", "tel", "tha")
XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
MGSM_LANGUAGES = ("en", "es", "sw", "bn")
PCA_LANGUAGES = ("eng", "swh", "tel", "spa", "deu", "ben", "tha", "zho")


# ----------------------------------------------------------------------------- the packaged configs


def _config_file(name: str) -> Any:
    return resources.files("langbridge.experiments").joinpath("configs", f"{name}.yaml")


@cache
def _load_yaml(name: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(_config_file(name).read_text(encoding="utf-8"))


def _recipe(recipe: str) -> dict[str, Any]:
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} is not one of {', '.join(RECIPES)}")
    return _load_yaml(recipe)


def recipe_data(recipe: str) -> dict[str, Any]:
    """The packaged training config of a recipe (configs/<recipe>.yaml), as a plain dict (a fresh copy)."""
    return copy.deepcopy(_recipe(recipe))


def recipe_defaults(recipe: str) -> tuple[int, float]:
    """(steps, bridge learning rate) of a recipe: its config's max_steps and optim.lr_bridge. `aligned` is the
    English-only recipe chosen in docs/science.md, `labeled` the paper-faithful one of the earlier demo."""
    data = _recipe(recipe)
    return int(data["max_steps"]), float(data["optim"]["lr_bridge"])


def ablation_variants() -> dict[str, dict[str, Any]]:
    """Label -> training-config values on top of the main run's (configs/ablations.yaml), in file order."""
    return copy.deepcopy(_load_yaml("ablations"))


# ----------------------------------------------------------------------------- settings


@dataclass
class DemoSettings:
    """Everything that decides the numbers; saved to OUTPUT/settings.json and checked on resume."""

    encoder: str = "e5-small"
    lm: str = "smollm2-135m-instruct"
    recipe: str = "aligned"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    steps: int = field(default_factory=lambda: recipe_defaults("aligned")[0])
    batch_size: int = 8
    lr_bridge: float = field(default_factory=lambda: recipe_defaults("aligned")[1])
    bridge: str = DEFAULT_BRIDGE_TYPE
    freeze_encoder: bool = True
    checkpoints: int = 4  # intermediate checkpoints per run (for the data-amount ablation)
    flores_languages: list[str] = field(default_factory=lambda: list(FLORES_LANGUAGES))
    flores_pairs: int | None = 100
    # FLORES X -> English: sentences per language scored by loss, and the first ones decoded for chrF.
    translation_limit: int | None = 100
    chrf_limit: int = 24
    xcopa_languages: list[str] = field(default_factory=lambda: list(XCOPA_LANGUAGES))
    xcopa_limit: int | None = 64
    mgsm_languages: list[str] = field(default_factory=lambda: list(MGSM_LANGUAGES))
    mgsm_limit: int = 8
    mgsm_max_new_tokens: int = 128
    pca_languages: list[str] = field(default_factory=lambda: list(PCA_LANGUAGES))
    pca_n: int = 200
    eval_batch_size: int = 8
    max_passages: int | None = None
    n_resamples: int = 2000
    data_dir: str | None = None
    # Which portion the numbers come from: test (the report) or dev (pilot / choices).
    portion: str = "test"

    @property
    def xcopa_split(self) -> str:
        return "test" if self.portion == "test" else "val"


def quick_settings(**overrides: Any) -> DemoSettings:
    """CI-sized smoke run: a few steps and a handful of examples per task (minutes on real models)."""
    base = DemoSettings(
        steps=4,
        batch_size=2,
        checkpoints=2,
        flores_languages=["eng", "swh"],
        flores_pairs=6,
        translation_limit=6,
        chrf_limit=2,
        xcopa_languages=["sw"],
        xcopa_limit=6,
        mgsm_languages=["sw"],
        mgsm_limit=2,
        mgsm_max_new_tokens=8,
        pca_languages=["eng", "swh"],
        pca_n=6,
        eval_batch_size=4,
        max_passages=64,
        n_resamples=200,
    )
    return replace(base, **overrides)


# ----------------------------------------------------------------------------- an output folder's settings


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def resolve_data_root(settings: DemoSettings) -> Path:
    from langbridge.training.sources import resolve_data_dir

    root = resolve_data_dir(settings.data_dir)
    if root is None:
        raise FileNotFoundError(
            "shared data not found: pass --data-dir pointing at ../shared/data (or set LANGBRIDGE_DATA)"
        )
    return root


def check_settings(out: Path, settings: DemoSettings, name: str = "settings.json") -> None:
    """Record the settings of a new output folder; refuse to mix runs when a folder holds other settings."""
    path = out / name
    current = asdict(settings)
    if path.exists():
        previous = read_json(path)
        if previous != current:
            changed = sorted(k for k in current if previous.get(k) != current[k])
            raise ValueError(
                f"{out} holds a demo run with other settings ({', '.join(changed)}); use another --output "
                "folder or delete it"
            )
    else:
        write_json(path, current)
