"""`langbridge train CONFIG --dry-run`: build the model from configs only (meta device, no weights) and print
parameter counts, trainable counts and a per-device memory estimate for one training step.

The memory numbers are estimates for planning, not measurements: weights, gradients and AdamW states follow
from the parameter counts; activations use the per-layer estimate of Korthikanti et al. (2022), ~34 x s x b x h
bytes per transformer layer in 16-bit mixed precision with a fused attention kernel (no stored s x s scores),
or ~2 x s x b x h per layer (plus one full layer) with gradient checkpointing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from langbridge.training.config import ConfigError, TrainConfig, model_settings

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def load_model_config(source: str, role: str) -> Any:
    """A transformers config from a config.json file, a model directory, an alias or a hub id."""
    from transformers import AutoConfig

    path = Path(source)
    try:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if "model_type" not in data:
                raise ConfigError(f"{path}: a {role} config.json needs a 'model_type' key")
            model_type = data.pop("model_type")
            data = {k: v for k, v in data.items() if k != "_comment"}
            return AutoConfig.for_model(model_type, **data)
        from langbridge.utils import resolve_model_name

        return AutoConfig.from_pretrained(resolve_model_name(source))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"--dry-run could not load the {role} config from {source!r} ({exc}). Set model.{role}_config to a "
            "config.json (configs/model_configs/ ships the paper's models) or use a local model directory."
        ) from exc


def build_meta_model(cfg: TrainConfig) -> Any:
    """The full LangBridge model with every tensor on the meta device (no memory, no weights)."""
    from langbridge import LangBridgeConfig, LangBridgeModel

    m = cfg.model
    encoder_config = load_model_config(m.encoder_config or m.encoder, "encoder")
    lm_config = load_model_config(m.lm_config or m.lm, "lm")
    settings = model_settings(cfg)
    # The LM's embedding norm needs its weights; a norm changes no parameter count or memory.
    settings["soft_token_norm"] = None
    config = LangBridgeConfig(
        encoder_config=encoder_config.to_dict(),
        lm_config=lm_config.to_dict(),
        encoder_name_or_path=m.encoder,
        lm_name_or_path=m.lm,
        **settings,
    )
    # torch.device("meta") rather than accelerate's init_empty_weights: under the latter, transformers skips
    # weight tying (mT5's shared/encoder embeddings would be counted twice).
    with torch.device("meta"):
        model = LangBridgeModel(config)
    return model


def _layers_hidden(config: Any) -> tuple[int, int]:
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or 0
    return int(layers), int(hidden)


def _activation_bytes(
    layers: int, hidden: int, seq: int, batch: int, checkpointing: bool, bytes_per: int
) -> float:
    scale = bytes_per / 2  # the 34 sbh estimate assumes 16-bit activations
    full_layer = 34 * seq * batch * hidden * scale
    if checkpointing:
        return layers * 2 * seq * batch * hidden * scale + full_layer
    return layers * full_layer


def estimate(cfg: TrainConfig, model: Any, world_size: int = 1) -> dict[str, Any]:
    """Parameter counts and a per-device memory estimate (bytes) for one training step."""
    parts = {}
    for name in ("encoder", "bridge", "lm"):
        module = getattr(model, name)
        total = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        parts[name] = {"parameters": total, "trainable": trainable}
    total = sum(p["parameters"] for p in parts.values())
    trainable = sum(p["trainable"] for p in parts.values())
    frozen = total - trainable

    # Planning assumes the paper's hardware: a GPU with bf16 unless the config says otherwise.
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else "bfloat16"
    if cfg.mixed_precision == "no":
        dtype = "float32" if cfg.model.dtype == "auto" else dtype
    act_bytes = 4 if cfg.mixed_precision == "no" else 2
    b, d = cfg.batch_size, cfg.data
    lm_seq = d.max_encoder_length + 1 + 1 + d.max_lm_length  # BOS + encoder slots + enc_eos + prompt/target
    lm_layers, lm_hidden = _layers_hidden(model.config.lm_config)
    enc_layers, enc_hidden = _layers_hidden(model.config.encoder_config)
    ckpt = cfg.model.gradient_checkpointing
    activations = _activation_bytes(lm_layers, lm_hidden, lm_seq, b, ckpt, act_bytes)
    if parts["encoder"]["trainable"]:
        activations += _activation_bytes(enc_layers, enc_hidden, d.max_encoder_length, b, ckpt, act_bytes)
    vocab = int(getattr(model.config.lm_config, "vocab_size", 0))
    logits = b * lm_seq * vocab * (act_bytes + 4 + 4)  # logits, fp32 copy for the loss, its gradient

    memory = {
        "frozen_weights": frozen * DTYPE_BYTES[dtype],
        "trainable_weights_fp32": trainable * 4,
        # ZeRO-2 / FSDP shard gradients and optimizer states over the processes.
        "gradients_fp32": trainable * 4 / world_size,
        "adamw_states_fp32": trainable * 8 / world_size,
        "activations": activations,
        "logits": logits,
    }
    memory["total"] = sum(memory.values())
    return {
        "parts": parts,
        "parameters": total,
        "trainable": trainable,
        "frozen_dtype": dtype,
        "lm_sequence_length": lm_seq,
        "micro_batch": b,
        "gradient_checkpointing": ckpt,
        "memory_bytes": memory,
    }


def format_report(cfg: TrainConfig, report: dict[str, Any]) -> str:
    lines = [
        f"encoder: {cfg.model.encoder}  ({cfg.model.encoder_config or 'config from the model'})",
        f"lm:      {cfg.model.lm}  ({cfg.model.lm_config or 'config from the model'})",
        f"bridge:  {cfg.model.bridge}, encoder {'frozen' if cfg.model.freeze_encoder else 'trained'}, LM frozen",
        "",
        f"{'part':<8} {'parameters':>16} {'trainable':>16}",
    ]
    for name, p in report["parts"].items():
        lines.append(f"{name:<8} {p['parameters']:>16,} {p['trainable']:>16,}")
    lines.append(f"{'total':<8} {report['parameters']:>16,} {report['trainable']:>16,}")
    sharded = report.get("sharded")
    lines += [
        "",
        f"memory estimate per device, one step (micro batch {report['micro_batch']}, LM sequence "
        f"{report['lm_sequence_length']}, frozen weights in {report['frozen_dtype']}, gradient checkpointing "
        f"{'on' if report['gradient_checkpointing'] else 'off'}):",
    ]
    header = f"  {'':<24} {'1 device':>12}"
    if sharded:
        label = f"{sharded['world_size']} GPUs ZeRO-2"
        header += f" {label:>18}"
    lines.append(header)
    for key, value in report["memory_bytes"].items():
        line = f"  {key:<24} {value / GIB:>8.2f} GiB"
        if sharded:
            line += f" {sharded['memory_bytes'][key] / GIB:>14.2f} GiB"
        lines.append(line)
    lines.append("  (activations and logits are rough; measure with a real step before sizing a cluster)")
    return "\n".join(lines)


def dry_run(cfg: TrainConfig, print_fn: Any = print, world_size: int = 8) -> dict[str, Any]:
    """Print and return the estimate for one device and, with `world_size` > 1, per device when gradients and
    optimizer states are sharded over that many processes (DeepSpeed ZeRO-2 / FSDP)."""
    model = build_meta_model(cfg)
    report = estimate(cfg, model)
    if world_size > 1:
        report["sharded"] = estimate(cfg, model, world_size=world_size) | {"world_size": world_size}
    print_fn(format_report(cfg, report))
    return report
