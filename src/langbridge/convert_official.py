"""Convert a checkpoint of the official LangBridge code (kaistAI/LangBridge) into this library's format.

Official layout: config.json with `enc`, `lm`, `alignments`, `dim_enc`, `dim_lm`, `freeze_language_model`,
`freeze_encoder`; weights under `lb.enc.*` (the encoder), `lb.alignment.*` (the bridge: `linear.*` or `ffn.*`, plus
`enc_eos`), `lb.lm.*` (the LM's base model, without head), `lb.lm_head.*`, and `lb.embeddings.*` (a second reference
to the LM's input embeddings). The official sequence is the same as ours for an unpadded example: LM BOS, the
projected encoder states, enc_eos, then the LM tokens after their BOS.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoConfig

from langbridge.configuration import BRIDGE_TYPES, LangBridgeConfig
from langbridge.modeling import LangBridgeModel
from langbridge.processing import (
    LangBridgeProcessor,
    load_lm_tokenizer,
)
from langbridge.utils import atomic_directory, check_replaceable, resolve_model_name

REQUIRED_FIELDS = ("enc", "lm", "alignments")


def read_official_state_dict(directory: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) official checkpoint."""
    shards = sorted(directory.glob("*.safetensors"))
    pickles = sorted(directory.glob("pytorch_model*.bin"))
    if not shards and not pickles:
        raise FileNotFoundError(
            f"No weights in {directory}: expected *.safetensors or pytorch_model*.bin files."
        )
    state: dict[str, torch.Tensor] = {}
    if shards:
        for shard in shards:
            try:
                state.update(load_file(shard))
            except (SafetensorError, OSError) as err:
                raise ValueError(f"Could not read {shard} (truncated or corrupt?): {err}") from err
        return state
    if not allow_pickle:
        raise ValueError(
            f"{directory} holds pickle weights ({pickles[0].name}), which can execute code when loaded. "
            "Pass --allow-pickle (allow_pickle=True) only if you trust the checkpoint."
        )
    for shard in pickles:
        state.update(torch.load(shard, map_location="cpu", weights_only=True))
    return state


def map_official_keys(state: dict[str, torch.Tensor], model: LangBridgeModel) -> dict[str, torch.Tensor]:
    """Rename official keys to ours; drop duplicates (lb.embeddings) and weights we do not use (BERT pooler)."""
    names = {id(module): name for name, module in model.lm.named_modules()}
    lm_base, head_name = names[id(model.lm.base_model)], names[id(model.lm.get_output_embeddings())]
    own = set(model.state_dict())
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("lb.enc."):
            new = "encoder." + key[len("lb.enc.") :]
        elif key.startswith("lb.alignment."):
            new = "bridge." + key[len("lb.alignment.") :]
        elif key.startswith("lb.lm_head."):
            new = f"lm.{head_name}." + key[len("lb.lm_head.") :]
        elif key.startswith("lb.lm."):
            new = f"lm.{lm_base}." + key[len("lb.lm.") :]
        elif key.startswith("lb.embeddings."):
            continue  # the same tensor as the LM's input embeddings
        else:
            raise ValueError(
                f"Unexpected key {key!r}: not an official LangBridge checkpoint (expected lb.* keys)."
            )
        if new not in own:
            if ".pooler." in new or new.startswith("encoder.pooler"):
                continue
            raise ValueError(f"Official weight {key!r} maps to {new!r}, which this model does not have.")
        mapped[new] = tensor
    return mapped


def convert_official(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    encoder: str | None = None,
    lm: str | None = None,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert `src` (an official checkpoint directory) into a full LangBridge checkpoint at `dst`.

    `encoder` / `lm` point at local directories (or hub ids) of the base models with their tokenizers; they
    default to the ids the official config names. A non-empty `dst` is refused unless `overwrite`."""
    src_dir, dst_dir = Path(src), Path(dst)
    check_replaceable(dst_dir, overwrite)  # before the slow part
    config_file = src_dir / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(
            f"{config_file} does not exist: SRC must be an official LangBridge checkpoint directory."
        )
    try:
        official = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{config_file} is not valid JSON ({err}); SRC must hold the official config.json"
        ) from err
    if not isinstance(official, dict):
        raise ValueError(f"{config_file} holds a {type(official).__name__}, not a JSON object of settings")
    missing = [f for f in REQUIRED_FIELDS if f not in official]
    if missing:
        raise ValueError(f"{config_file} lacks {missing}: not a config of the official LangBridge code.")
    if official["alignments"] not in BRIDGE_TYPES:
        raise ValueError(
            f"alignments={official['alignments']!r} is not supported; only {BRIDGE_TYPES} convert."
        )
    if not official.get("freeze_language_model", True):
        warnings.warn(
            "The official model trained its LM; it is converted as is and frozen from now on.", stacklevel=2
        )
    encoder_source = resolve_model_name(encoder or official["enc"])
    lm_source = resolve_model_name(lm or official["lm"])
    encoder_config, lm_config = (
        AutoConfig.from_pretrained(encoder_source),
        AutoConfig.from_pretrained(lm_source),
    )
    for name, dim, got in (
        ("dim_enc", official.get("dim_enc"), encoder_config.hidden_size),
        ("dim_lm", official.get("dim_lm"), lm_config.hidden_size),
    ):
        if dim is not None and dim != got:
            raise ValueError(
                f"The official config says {name}={dim} but the base model has hidden size {got}."
            )

    state = read_official_state_dict(src_dir, allow_pickle=allow_pickle)
    encoder_vocab = state.get("lb.enc.shared.weight", state.get("lb.enc.embeddings.word_embeddings.weight"))
    if encoder_vocab is not None:
        encoder_config.vocab_size = encoder_vocab.shape[
            0
        ]  # the official recipe may have resized the vocabulary
    # The processor owns the soft-token placeholder; the config stores its id.
    processor = LangBridgeProcessor.from_encoder_and_lm(encoder_source, load_lm_tokenizer(lm_source))
    config = LangBridgeConfig(
        encoder_config=encoder_config.to_dict(),
        lm_config=lm_config.to_dict(),
        bridge_type=official["alignments"],
        freeze_encoder=official.get("freeze_encoder", True),
        soft_token_id=processor.soft_token_id,
        encoder_name_or_path=encoder_source,
        lm_name_or_path=lm_source,
    )
    with init_empty_weights():  # parameters come from the checkpoint; buffers (e.g. rotary tables) stay real
        model = LangBridgeModel(config)
    mapped = map_official_keys(state, model)
    absent = sorted(set(model.state_dict()) - set(mapped) - _tied_keys(model))
    if absent:
        raise ValueError(f"The official checkpoint lacks weights for {absent[:5]} ({len(absent)} in all).")
    model.load_state_dict(mapped, strict=False, assign=True)
    model.tie_weights()
    model.apply_freezing()
    with atomic_directory(dst_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return dst_dir


def _tied_keys(model: LangBridgeModel) -> set[str]:
    return set(getattr(model, "all_tied_weights_keys", {}) or {})


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert-official",
        help="convert a checkpoint of the official LangBridge code into this library's format",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="official checkpoint directory (config.json + weights)")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--encoder", help="local directory (or hub id) of the base encoder and its tokenizer")
    parser.add_argument("--lm", help="local directory (or hub id) of the base LM and its tokenizer")
    parser.add_argument("--allow-pickle", action="store_true", help="allow reading pytorch_model*.bin files")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty DST (atomically, once the conversion is done)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = convert_official(
        args.src,
        args.dst,
        encoder=args.encoder,
        lm=args.lm,
        allow_pickle=args.allow_pickle,
        overwrite=args.overwrite,
    )
    print(f"Converted {args.src} -> {out}")
    return 0
