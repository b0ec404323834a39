"""LangBridge checkpoint formats: the full model (`model.safetensors`, transformers' own format) and the adapter
(`adapter_model.safetensors`: the trained weights only, plus where the base encoder and LM come from). Files
appear atomically; pickle weights load only when allowed. `LangBridgeModel.save_pretrained` / `from_pretrained`
call these."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from langbridge.configuration import LangBridgeConfig
from langbridge.loaders import load_base_models
from langbridge.utils import reporting_disk_full, resolve_model_name

ADAPTER_WEIGHTS = "adapter_model.safetensors"
FULL_WEIGHTS = "model.safetensors"
FULL_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "adapter_model.bin", "pytorch_model.bin.index.json")
# Arguments the Auto classes pass along; irrelevant when an adapter loads its bases itself.
HUB_LOADING_KWARGS = {
    "config",
    "revision",
    "trust_remote_code",
    "adapter_kwargs",
    "cache_dir",
    "local_files_only",
    "token",
    "_from_auto",
    "_commit_hash",
    "subfolder",
    "force_download",
    "proxies",
    "use_safetensors",
}
# Config fields that must agree between the base models an adapter was trained on and the ones it is loaded onto.
BASE_IDENTITY_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def save_checkpoint(
    model: Any, save_directory: str | os.PathLike, adapter_only: bool, save_full: Callable[[str], None]
) -> None:
    """Save config, generation config and safetensors weights: the whole model (`save_full`, transformers'
    writer), or only the trained weights plus where the base encoder and LM come from."""
    target = Path(save_directory)
    target.mkdir(parents=True, exist_ok=True)
    # A full disk names the file; the temporary folder goes away and files already in `target` stay.
    kept = f"the partial files were removed and {target} was left as it was"
    with (
        tempfile.TemporaryDirectory(dir=target, prefix=".saving-") as tmp,
        reporting_disk_full(target, kept, name_from_error=True),
    ):
        if adapter_only:
            missing = [n for n in ("encoder_name_or_path", "lm_name_or_path") if not getattr(model.config, n)]
            if missing:
                raise ValueError(
                    f"An adapter checkpoint must record where its base models come from, but {missing} are unset. "
                    "Set them on model.config or save the full model (adapter_only=False)."
                )
            model.config.save_pretrained(tmp)
            if model.generation_config is not None:
                model.generation_config.save_pretrained(tmp)
            save_file(model.adapter_state_dict(), Path(tmp) / ADAPTER_WEIGHTS, metadata={"format": "pt"})
            stale = [FULL_WEIGHTS, FULL_INDEX]
        else:
            save_full(tmp)
            stale = [ADAPTER_WEIGHTS]
        for name in stale:
            (target / name).unlink(missing_ok=True)
        for path in Path(tmp).iterdir():
            destination = target / path.name
            if path.is_dir():
                shutil.rmtree(destination, ignore_errors=True)
            os.replace(path, destination)


def load_checkpoint(
    cls: Any,
    name_or_path: str | os.PathLike,
    load_full: Callable[..., Any],
    *args: Any,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> Any:
    """A full or adapter checkpoint (a folder, an alias or a hub id) as a `cls` model. `load_full` is
    transformers' loader; adapters are rebuilt from their config on their base models (`encoder=`/`lm=`
    override where those come from)."""
    directory = Path(resolve_model_name(name_or_path))
    if not directory.is_dir():
        if Path(name_or_path).suffix or os.sep in str(name_or_path):
            raise FileNotFoundError(f"Checkpoint directory {name_or_path} does not exist.")
        model = load_full(name_or_path, *args, **kwargs)  # hub id
        model.apply_freezing()
        return model
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"{directory} has no config.json: it is not a LangBridge checkpoint. Save one with "
            "model.save_pretrained(dir), or convert an official checkpoint with `langbridge convert-official`."
        )
    has_full = any((directory / n).exists() for n in (FULL_WEIGHTS, FULL_INDEX))
    pickles = [n for n in PICKLE_WEIGHTS if (directory / n).exists()]
    if not has_full and not (directory / ADAPTER_WEIGHTS).exists():
        if pickles and not allow_pickle:
            raise ValueError(
                f"{directory} holds only pickle weights ({', '.join(pickles)}), which can execute code when "
                "loaded. Re-save as safetensors, or pass allow_pickle=True if you trust the file."
            )
        if not pickles:
            raise FileNotFoundError(
                f"{directory} has a config.json but no weights ({FULL_WEIGHTS} or {ADAPTER_WEIGHTS})."
            )
    if not has_full and (directory / ADAPTER_WEIGHTS).exists():
        return load_adapter(cls, directory, allow_pickle=allow_pickle, **kwargs)
    try:
        model = load_full(directory, *args, use_safetensors=has_full or not allow_pickle, **kwargs)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"Could not load the weights in {directory}: {err}") from err
    model.apply_freezing()
    return model


def load_adapter(
    cls: Any,
    directory: Path,
    encoder: Any = None,
    lm: Any = None,
    dtype: torch.dtype | str | None = None,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> Any:
    """The adapter's saved config on its base models (or `encoder=`/`lm=`), then its weights."""
    saved = LangBridgeConfig.from_pretrained(directory)
    unexpected = sorted(set(kwargs) - HUB_LOADING_KWARGS)
    if unexpected:
        raise TypeError(f"Unexpected arguments for an adapter checkpoint: {unexpected}")
    encoder_model, _, lm_model, _ = load_base_models(
        encoder if encoder is not None else saved.encoder_name_or_path,
        lm if lm is not None else saved.lm_name_or_path,
        dtype=dtype,
        allow_pickle=allow_pickle,
    )
    check_same_bases(saved, encoder_model.config, lm_model.config, directory)
    model = cls.from_config_and_parts(saved, encoder_model, lm_model)
    saved_vocab = saved.encoder_config.vocab_size
    if saved_vocab != model.encoder.get_input_embeddings().num_embeddings:
        model.encoder.resize_token_embeddings(saved_vocab)
    weights = directory / ADAPTER_WEIGHTS
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"Could not read {weights} (truncated or corrupt?): {err}") from err
    model.load_adapter_state_dict(state, source=str(weights))
    model.eval()
    return model


def check_same_bases(saved: LangBridgeConfig, encoder_config: Any, lm_config: Any, directory: Path) -> None:
    for part, old, new in (
        ("encoder", saved.encoder_config, encoder_config),
        ("LM", saved.lm_config, lm_config),
    ):
        for field in BASE_IDENTITY_FIELDS:
            a, b = getattr(old, field, None), getattr(new, field, None)
            if a != b:
                raise ValueError(
                    f"Adapter {directory} was trained on a different base {part}: {field}={a!r} in the checkpoint, "
                    f"{b!r} in the loaded {part}. Pass the right base with {part.lower()}=PATH."
                )
