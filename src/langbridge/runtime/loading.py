"""Loading: a LangBridge checkpoint or a plain causal LM (path, hub id or bundled alias) into a `ModelRunner`, with
one dtype resolution and one "is this a LangBridge checkpoint" check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..utils import check_model_source, model_load_error, resolve_model_name
from .decoding import ModelRunner
from .models import CausalLMRunner, LangBridgeRunner

__all__ = ["DTYPES", "is_langbridge_checkpoint", "load", "resolve_dtype"]

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype | None:
    """ "auto" (or None): bfloat16 on CUDA, float32 elsewhere; "stored": None, the dtype the weights were saved in
    (transformers' own default)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "stored":
        return None
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use auto, float32, bfloat16 or float16.")
    return DTYPES[dtype]


def is_langbridge_checkpoint(source: str | os.PathLike) -> bool:
    """True for a folder (or hub id) whose config.json has model_type "langbridge"."""
    source = os.fspath(source)
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        try:
            return json.loads(config_file.read_text()).get("model_type") == "langbridge"
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    if Path(source).exists():
        return False
    try:
        from transformers import AutoConfig

        import langbridge  # noqa: F401  (registers the langbridge model type)

        return AutoConfig.from_pretrained(source).model_type == "langbridge"
    except Exception:
        return False


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(
    path_or_alias: str | os.PathLike,
    lm_only: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    name: str | None = None,
    batch_size: int = 8,
    continuous_batching: bool = True,
    purpose: str = "use",
    processor_kwargs: dict[str, Any] | None = None,
    classes: tuple[type[LangBridgeRunner], type[CausalLMRunner]] = (LangBridgeRunner, CausalLMRunner),
) -> ModelRunner:
    """Load a model ready to generate and score.

    A LangBridge checkpoint gives a `LangBridgeRunner`; with `lm_only`, a plain causal LM (path, hub id or an alias
    of `langbridge.pretrained`) or a LangBridge checkpoint's own LM gives a `CausalLMRunner`. `device`: default CUDA
    when available; `dtype`: see `resolve_dtype`. `purpose` words the hint of the not-a-checkpoint error
    ("evaluate", "generate with"); `processor_kwargs` override saved processor settings; `classes` are the runner
    types to build (subclasses adding a caller's own methods, e.g. evaluation's backends)."""
    langbridge_cls, lm_cls = classes
    spec = os.fspath(path_or_alias)
    check_model_source(spec)  # a missing path or an offline hub id: say so before transformers guesses
    source = resolve_model_name(spec)
    device = torch.device(device or default_device())
    torch_dtype = resolve_dtype(dtype, device)
    if is_langbridge_checkpoint(source):
        from ..modeling import LangBridgeModel
        from ..processing import LangBridgeProcessor

        model = LangBridgeModel.from_pretrained(source, dtype=torch_dtype).to(device).eval()
        processor = LangBridgeProcessor.from_pretrained(source, **(processor_kwargs or {}))
        if lm_only:
            return lm_cls(model.lm, processor.lm_tokenizer, batch_size, name, device, continuous_batching)
        return langbridge_cls(model, processor, batch_size, name, device, continuous_batching)
    if not lm_only:
        if not Path(source).exists():
            raise FileNotFoundError(
                f"{spec}: no such directory, and no LangBridge checkpoint by that name on the hub (or the hub is "
                "unreachable). Pass a saved LangBridge checkpoint directory, or --lm-only for a plain causal LM."
            )
        raise ValueError(
            f"{spec} is not a LangBridge checkpoint (no config.json with model_type 'langbridge'). Pass --lm-only to "
            f"{purpose} it as a plain causal LM (the LM-alone baseline), or point at a trained LangBridge directory."
        )
    from transformers import AutoModelForCausalLM

    from ..processing import load_lm_tokenizer

    try:
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype).to(device).eval()
        tokenizer = load_lm_tokenizer(source)
    except OSError as err:
        if Path(source).is_dir():
            raise FileNotFoundError(f"Could not load a causal LM from {spec!r}: {err}") from err
        raise FileNotFoundError(model_load_error(spec, err)) from err
    return lm_cls(lm, tokenizer, batch_size, name, device, continuous_batching)
