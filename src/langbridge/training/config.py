"""Training configuration: dataclasses loaded from YAML plus dotted ``key=value`` overrides.

Validation is strict on purpose: a typo in a 9-hour run's config should fail in the first second,
with a message that names the key and lists what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from langbridge.configuration import (
    BRIDGE_TYPES,
    DEFAULT_BRIDGE_TYPE,
    DEFAULT_MAX_ENCODER_LENGTH,
    length_error,
)
from langbridge.utils import read_utf8

Mode = Literal["labeled", "unlabeled", "reconstruction", "next_sentence"]
TemplateName = Literal["plain", "metamath", "alpaca", "orca2", "chatml", "custom"]
FileFormat = Literal["auto", "jsonl", "json", "txt", "tsv"]
TxtUnit = Literal["line", "paragraph", "file"]
Schedule = Literal["constant", "constant_with_warmup", "cosine", "linear"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Reporter = Literal["tensorboard", "wandb"]
BridgeType = Literal[BRIDGE_TYPES]  # type: ignore[valid-type]


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range. The message names the key and the fix."""


@dataclass
class ModelConfig:
    # Short alias (see `langbridge models`), hub id or local directory.
    encoder: str = "e5-small"
    lm: str = "smollm2-135m-instruct"
    bridge: BridgeType = DEFAULT_BRIDGE_TYPE
    # LangBridge keeps the LM frozen always; the encoder is frozen for instruction-tuned LMs (labeled data)
    # and trained for base LMs (unlabeled data) in the paper.
    freeze_encoder: bool = True
    # Train only the encoder's input embeddings while it is frozen (official recipe after adding tokens).
    train_encoder_embeddings: bool = False
    # Departures from the paper, all off by default (docs/science.md measures each):
    # which encoder hidden state the bridge reads (0 = embeddings, -1 = last layer, the paper's choice) ...
    encoder_layer: int = -1
    # ... or a learned softmax-weighted mix of all of them (LayAlign's English-only variant).
    encoder_layer_mix: bool = False
    # Parameter-free layer norm of the encoder states before the bridge.
    bridge_input_norm: bool = False
    # Rescale each soft token to the LM's mean token-embedding norm.
    soft_token_norm: bool = False
    # Start the bridge from another run's checkpoint (e.g. an alignment stage) instead of random weights ...
    init_bridge_from: str | None = None
    # ... or from a closed-form ridge fit to the LM's embeddings of the aligned tokens of the first
    # `bridge_init_examples` training inputs (linear bridge only).
    bridge_init: Literal["random", "ridge"] = "random"
    bridge_init_examples: int = 2000
    # dtype the frozen weights are loaded in; "auto" = bfloat16 on a bf16-capable GPU, float32 otherwise.
    dtype: Dtype = "auto"
    gradient_checkpointing: bool = False
    # torch.compile each encoder and LM layer (dynamic shapes): fuses the many small non-matmul ops. Costs
    # ~10-20 s of compiling at the start; ~5-7% faster steps for the default pair on a 2-core CPU.
    compile: bool = False
    # Only for --dry-run: config.json files (or dirs) used instead of `encoder`/`lm` to build the model
    # on the meta device. Relative paths are resolved against the YAML file's folder.
    encoder_config: str | None = None
    lm_config: str | None = None


@dataclass
class DataSource:
    # Local file (jsonl/json/txt/tsv). Relative paths: CWD first, then data.data_dir.
    path: str | None = None
    # Hub dataset used when `path` is missing locally (or when no path is given).
    hub: str | None = None
    hub_config: str | None = None
    hub_data_dir: str | None = None
    split: str = "train"
    format: FileFormat = "auto"
    # Field mapping. Labeled: instruction (+ optional input and system) -> output. Unlabeled: text.
    instruction_field: str = "instruction"
    input_field: str | None = "input"
    output_field: str = "output"
    system_field: str | None = None
    text_field: str = "text"
    # TSV without a header row: column names in order (e.g. [question, answer]).
    columns: list[str] | None = None
    # txt files: one document per line, per blank-line-separated paragraph, or the whole file.
    txt_unit: TxtUnit = "line"
    max_examples: int | None = None
    # Mixing objectives: this source's mode (default: data.mode) and the LM prompt its examples use between
    # the soft tokens and the target (default: the template's). Reconstruction examples usually name their
    # task here, e.g. "\nRewrite the text above in English.<|im_end|>\n<|im_start|>assistant\n".
    mode: Mode | None = None
    lm_prompt: str | None = None


@dataclass
class DataConfig:
    mode: Mode = "labeled"
    train: list[DataSource] = field(default_factory=list)
    eval: list[DataSource] = field(default_factory=list)
    # Held-out examples taken from the training data when `eval` is empty (0 = no held-out loss).
    eval_size: int = 0
    # Root for relative data paths; default: $LANGBRIDGE_DATA, else ../shared/data if it exists.
    data_dir: str | None = None
    template: TemplateName = "plain"
    # Override the named template's parts, or give both for template=custom.
    # encoder_template must contain "{text}".
    encoder_template: str | None = None
    lm_prompt: str | None = None
    # LM tokens before the bridged states; null = the LM's BOS if its tokenizer adds one (the paper's layout).
    # Chat LMs can open the user turn here, e.g. "<|im_start|>user\n" for ChatML.
    lm_prefix: str | None = None
    system_prompt: str | None = None
    max_encoder_length: int = DEFAULT_MAX_ENCODER_LENGTH
    # Shorter than a processor's default (DEFAULT_MAX_LM_LENGTH): training prompts and targets are short, and the
    # saved processor records the value a run used.
    max_lm_length: int = 128
    # Unlabeled mode: each document is split after a random number of encoder tokens in [min, max]
    # (max defaults to max_encoder_length), so the model sees short and long encoder inputs.
    min_split_tokens: int = 32
    max_split_tokens: int | None = None
    group_by_length: bool = True
    mega_batch_mult: int = 50
    streaming: bool = False
    shuffle_buffer: int = 10000
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr_bridge: float = 6e-4
    lr_encoder: float = 2e-5
    weight_decay_bridge: float = 0.0
    weight_decay_encoder: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Per-device micro batch. Effective batch = batch_size x gradient_accumulation_steps x processes.
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    # If set, gradient_accumulation_steps is derived from it at launch (must divide evenly).
    effective_batch_size: int | None = None
    # Exactly one of max_steps (optimizer steps) and num_epochs drives the run length.
    max_steps: int | None = None
    num_epochs: float | None = 1.0
    seed: int = 42
    mixed_precision: MixedPrecision = "auto"
    log_interval: int = 10
    eval_interval: int = 0
    eval_batch_size: int | None = None
    save_interval: int = 0
    save_total_limit: int | None = 2
    output_dir: str = "outputs/run"
    report_to: list[Reporter] = field(default_factory=list)
    progress_bar: bool = True
    num_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}"
            )
        return value
    if origin is list:
        if isinstance(value, (str, dict)) or not isinstance(value, (list, tuple)):
            # A single item where a list is expected is a common YAML slip; accept it.
            value = [value]
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                pass
            else:
                if f.is_integer():
                    return int(f)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "6e-4" (no dot) as a string; accept it as the number it obviously is.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {tp!r} for {key}")  # programming error


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config key {full!r}; allowed keys{' in ' + prefix if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- validation


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Range and consistency checks the type system cannot express. Returns cfg for chaining."""
    d, o = cfg.data, cfg.optim
    _check(bool(cfg.model.encoder), "model.encoder: must name an encoder (alias, hub id or path)")
    _check(bool(cfg.model.lm), "model.lm: must name a language model (alias, hub id or path)")
    _check(
        not (cfg.model.bridge_init == "ridge" and cfg.model.init_bridge_from),
        "model.bridge_init=ridge and model.init_bridge_from both set the bridge's start; keep one",
    )
    _check(
        cfg.model.bridge_init != "ridge" or cfg.model.bridge == "linear",
        "model.bridge_init=ridge fits a linear map; set model.bridge: linear",
    )
    _check(cfg.model.bridge_init_examples >= 1, "model.bridge_init_examples: must be >= 1")
    _check(len(d.train) > 0, "data.train: give at least one data source (a `path` and/or a `hub` name)")
    for group, sources in (("data.train", d.train), ("data.eval", d.eval)):
        for i, src in enumerate(sources):
            where = f"{group}[{i}]"
            _check(
                src.path is not None or src.hub is not None,
                f"{where}: set `path` (local file) or `hub` (dataset name)",
            )
            _check(
                src.max_examples is None or src.max_examples >= 1,
                f"{where}.max_examples: must be >= 1 or null",
            )
            if (src.mode or d.mode) == "labeled":
                _check(
                    bool(src.instruction_field) and bool(src.output_field),
                    f"{where}: labeled mode needs instruction_field and output_field",
                )
    _check(d.eval_size >= 0, f"data.eval_size: must be >= 0, got {d.eval_size}")
    _check(
        not (d.eval and d.eval_size),
        "data.eval_size: set either data.eval sources or data.eval_size, not both",
    )
    for name in ("max_encoder_length", "max_lm_length"):
        message = length_error(f"data.{name}", getattr(d, name))
        _check(message is None, message or "")
    _check(d.min_split_tokens >= 1, f"data.min_split_tokens: must be >= 1, got {d.min_split_tokens}")
    max_split = d.max_split_tokens if d.max_split_tokens is not None else d.max_encoder_length
    _check(
        d.min_split_tokens <= max_split,
        f"data.min_split_tokens ({d.min_split_tokens}) must be <= data.max_split_tokens ({max_split})",
    )
    _check(d.mega_batch_mult >= 1, f"data.mega_batch_mult: must be >= 1, got {d.mega_batch_mult}")
    _check(d.shuffle_buffer >= 1, f"data.shuffle_buffer: must be >= 1, got {d.shuffle_buffer}")
    _check(d.num_workers >= 0, f"data.num_workers: must be >= 0, got {d.num_workers}")
    _check(
        not (d.streaming and d.num_workers > 0),
        "data.num_workers: must be 0 with data.streaming=true (a stream cannot be split across workers deterministically)",
    )
    if d.encoder_template is not None:
        _check("{text}" in d.encoder_template, "data.encoder_template: must contain the placeholder {text}")
    if d.template == "custom":
        _check(
            d.encoder_template is not None and d.lm_prompt is not None,
            "data.template=custom needs data.encoder_template (with {text}) and data.lm_prompt",
        )

    for name in (
        "lr_bridge",
        "lr_encoder",
        "weight_decay_bridge",
        "weight_decay_encoder",
        "max_grad_norm",
        "adam_eps",
    ):
        value = getattr(o, name)
        _check(math.isfinite(value), f"optim.{name}: must be a finite number, got {value}")
    _check(o.lr_bridge > 0, f"optim.lr_bridge: must be > 0, got {o.lr_bridge}")
    _check(o.lr_encoder >= 0, f"optim.lr_encoder: must be >= 0, got {o.lr_encoder}")
    for name in ("weight_decay_bridge", "weight_decay_encoder", "max_grad_norm", "adam_eps"):
        _check(getattr(o, name) >= 0, f"optim.{name}: must be >= 0, got {getattr(o, name)}")
    for name in ("adam_beta1", "adam_beta2"):
        _check(0 <= getattr(o, name) < 1, f"optim.{name}: must be in [0, 1), got {getattr(o, name)}")
    _check(o.warmup_steps >= 0, f"optim.warmup_steps: must be >= 0, got {o.warmup_steps}")
    _check(0 <= o.warmup_ratio < 1, f"optim.warmup_ratio: must be in [0, 1), got {o.warmup_ratio}")
    _check(not (o.warmup_steps and o.warmup_ratio), "optim: set warmup_steps or warmup_ratio, not both")
    if o.schedule == "constant":
        _check(
            o.warmup_steps == 0 and o.warmup_ratio == 0,
            "optim.schedule=constant has no warmup; use schedule=constant_with_warmup or cosine",
        )

    _check(cfg.batch_size >= 1, f"batch_size: must be >= 1, got {cfg.batch_size}")
    _check(
        cfg.gradient_accumulation_steps >= 1,
        f"gradient_accumulation_steps: must be >= 1, got {cfg.gradient_accumulation_steps}",
    )
    if cfg.effective_batch_size is not None:
        _check(
            cfg.effective_batch_size >= cfg.batch_size and cfg.effective_batch_size % cfg.batch_size == 0,
            f"effective_batch_size ({cfg.effective_batch_size}) must be a multiple of batch_size ({cfg.batch_size})",
        )
    _check(
        (cfg.max_steps is None) != (cfg.num_epochs is None),
        "set exactly one of max_steps and num_epochs (the other to null)",
    )
    _check(cfg.max_steps is None or cfg.max_steps >= 1, f"max_steps: must be >= 1, got {cfg.max_steps}")
    _check(
        cfg.num_epochs is None or (cfg.num_epochs > 0 and math.isfinite(cfg.num_epochs)),
        f"num_epochs: must be > 0, got {cfg.num_epochs}",
    )
    _check(
        not (d.streaming and cfg.max_steps is None),
        "data.streaming=true needs max_steps (a stream has no known length for num_epochs)",
    )
    _check(0 <= cfg.seed < 2**32, f"seed: must be in [0, 2**32), got {cfg.seed}")
    _check(cfg.log_interval >= 1, f"log_interval: must be >= 1, got {cfg.log_interval}")
    for name in ("eval_interval", "save_interval"):
        _check(
            getattr(cfg, name) >= 0, f"{name}: must be >= 0 (0 = only at the end), got {getattr(cfg, name)}"
        )
    _check(
        cfg.eval_batch_size is None or cfg.eval_batch_size >= 1,
        f"eval_batch_size: must be >= 1, got {cfg.eval_batch_size}",
    )
    _check(
        cfg.save_total_limit is None or cfg.save_total_limit >= 1,
        f"save_total_limit: must be >= 1 or null (keep all), got {cfg.save_total_limit}",
    )
    _check(bool(cfg.output_dir), "output_dir: must be a directory path")
    _check(
        cfg.num_threads is None or cfg.num_threads >= 1,
        f"num_threads: must be >= 1 or null, got {cfg.num_threads}",
    )
    return cfg


# ----------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr_bridge=1e-3`` -> (["optim", "lr_bridge"], 0.001). Values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr_bridge=1e-3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; use dotted keys like data.max_lm_length=256")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted overrides to a plain dict (list items addressed by index: data.train.0.path=...)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {where} must be an index below {len(node)}")
                node = node[int(part)]
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {text!r}: {where} is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError(f"override {text!r}: last key must be an index below {len(node)}")
            node[int(last)] = value
        else:
            node[last] = value
    return data


def _resolve_relative(path: str | None, base: Path) -> str | None:
    if path is None or Path(path).is_absolute() or Path(path).exists():
        return path
    candidate = base / path
    return str(candidate.resolve()) if candidate.exists() else path


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    import copy

    data = apply_overrides(copy.deepcopy(data or {}), list(overrides or []))
    return validate(_from_dict(TrainConfig, data))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or defaults when ``path`` is None), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"config file {str(path)!r} not found; see configs/ for examples (configs/default.yaml)"
            )
        try:
            loaded = yaml.safe_load(read_utf8(path, ConfigError))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: top level must be a mapping of config keys, got {type(loaded).__name__}"
            )
        data = loaded or {}
        base = path.resolve().parent
    cfg = config_from_dict(data, overrides)
    # Model config files for --dry-run live next to the YAML; make them independent of the CWD.
    cfg.model.encoder_config = _resolve_relative(cfg.model.encoder_config, base)
    cfg.model.lm_config = _resolve_relative(cfg.model.lm_config, base)
    return cfg


def allowed_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """All dotted keys of the config, for help texts."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            keys.extend(allowed_keys(tp, name + "."))
        else:
            keys.append(name)
    return keys


def flatten_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys (`optim.lr_bridge`) with scalar values (others as JSON)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = json.dumps(v)
    return out


def model_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The `LangBridgeConfig` settings that a training config's `model.*` keys ask for: the one mapping from a
    training config to a model config (the recipe and the dry run build from it; an adapter checkpoint stores
    the resulting config and is rebuilt from that). `soft_token_norm="lm"` is resolved from the LM's weights."""
    m = cfg.model
    return {
        "bridge_type": m.bridge,
        "freeze_encoder": m.freeze_encoder,
        "train_encoder_embeddings": m.train_encoder_embeddings,
        "encoder_layer": m.encoder_layer,
        "encoder_layer_mix": m.encoder_layer_mix,
        "bridge_input_norm": m.bridge_input_norm,
        "soft_token_norm": "lm" if m.soft_token_norm else None,
    }
