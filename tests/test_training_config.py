"""Training config: strict validation, key=value overrides, the shipped configs, and the CLI's error path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from langbridge.training.config import (
    ConfigError,
    TrainConfig,
    allowed_keys,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_override,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PAPER = sorted((CONFIGS / "paper").glob("*.yaml"))
MINIMAL = {"data": {"train": [{"path": "train.jsonl"}]}}


def make(overrides: list[str], base: dict | None = None) -> TrainConfig:
    return config_from_dict(base if base is not None else MINIMAL, overrides)


# ----------------------------------------------------------------------------- rejection messages


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # unknown keys: the message names the key and lists the allowed ones at that level
        ("bogus=1", ["'bogus'", "allowed keys", "batch_size", "output_dir"]),
        ("optim.lr=1e-3", ["'optim.lr'", "allowed keys in optim", "lr_bridge", "lr_encoder"]),
        ("data.train.0.filename=x", ["'data.train[0].filename'", "path", "hub"]),
        # literal choices: the message lists the allowed values
        ("data.mode=supervised", ["data.mode", "'supervised'", "labeled, unlabeled"]),
        ("data.template=vicuna", ["data.template", "plain, metamath, alpaca, orca2, chatml, custom"]),
        ("optim.schedule=exponential", ["optim.schedule", "constant", "cosine"]),
        ("model.bridge=mlp", ["model.bridge", "linear, ffn"]),
        ("mixed_precision=fp8", ["mixed_precision", "auto, no, bf16, fp16"]),
        ("report_to=[mlflow]", ["report_to[0]", "tensorboard, wandb"]),
        # types
        ("batch_size=abc", ["batch_size", "expected an integer", "'abc'"]),
        ("batch_size=2.5", ["batch_size", "expected an integer"]),
        ("model.freeze_encoder=maybe", ["model.freeze_encoder", "true or false"]),
        ("optim.lr_bridge=fast", ["optim.lr_bridge", "expected a number"]),
        # ranges
        ("batch_size=0", ["batch_size", ">= 1", "got 0"]),
        ("gradient_accumulation_steps=0", ["gradient_accumulation_steps", ">= 1"]),
        ("optim.lr_bridge=0", ["optim.lr_bridge", "> 0"]),
        ("optim.lr_encoder=-1", ["optim.lr_encoder", ">= 0"]),
        ("optim.adam_beta2=1.0", ["optim.adam_beta2", "[0, 1)"]),
        ("optim.warmup_ratio=1.5", ["optim.warmup_ratio", "[0, 1)"]),
        ("data.max_encoder_length=0", ["data.max_encoder_length", "[1, 1000000]"]),
        ("data.eval_size=-3", ["data.eval_size", ">= 0"]),
        ("seed=-1", ["seed", "[0, 2**32)"]),
        ("log_interval=0", ["log_interval", ">= 1"]),
        ("save_total_limit=0", ["save_total_limit", ">= 1 or null"]),
        ("data.min_split_tokens=300", ["data.min_split_tokens (300)", "data.max_split_tokens (128)"]),
        ("data.encoder_template=no placeholder", ["data.encoder_template", "{text}"]),
        ("effective_batch_size=12", ["effective_batch_size (12)", "multiple of batch_size (8)"]),
    ],
)
def test_invalid_values_are_rejected_with_the_key_and_the_allowed_values(override, expected):
    base = {**MINIMAL, "data": {**MINIMAL["data"], "max_encoder_length": 128}}
    with pytest.raises(ConfigError) as err:
        make([override], base)
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"max_steps": 10}, "exactly one of max_steps and num_epochs"),  # num_epochs defaults to 1
        ({"max_steps": None, "num_epochs": None}, "exactly one of max_steps and num_epochs"),
        ({"data": {"train": []}}, "data.train: give at least one data source"),
        ({"data": {"train": [{"split": "train"}]}}, "data.train[0]: set `path`"),
        ({"data": {"train": [{"path": "a"}], "template": "custom", "lm_prompt": "x"}}, "template=custom"),
        ({"data": {"train": [{"path": "a"}], "eval": [{"path": "b"}], "eval_size": 4}}, "not both"),
        ({"data": {"train": [{"path": "a"}], "streaming": True}}, "data.streaming=true needs max_steps"),
        ({"optim": {"warmup_steps": 10}, **MINIMAL}, "schedule=constant has no warmup"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_inconsistent_settings_are_rejected(data, expected):
    with pytest.raises(ConfigError, match=".*") as err:
        if isinstance(data, list):
            config_from_dict({"model": data, **MINIMAL})
        else:
            config_from_dict({**MINIMAL, **data})
    assert expected in str(err.value)


def test_defaults_validate_and_cover_every_key():
    cfg = make([])
    assert cfg.data.mode == "labeled" and cfg.optim.schedule == "constant"
    assert cfg.optim.lr_bridge == 6e-4 and cfg.optim.lr_encoder == 2e-5
    keys = allowed_keys()
    for key in ("model.encoder", "data.template", "optim.lr_bridge", "max_steps", "output_dir"):
        assert key in keys
    assert len(keys) == len(set(keys))


# ----------------------------------------------------------------------------- overrides


def test_overrides_parse_values_as_yaml_and_address_lists_by_index():
    assert parse_override("max_steps=7") == (["max_steps"], 7)
    # PyYAML reads "1e-3" as a string; the float field coerces it (checked below with 3e-4).
    assert parse_override("optim.lr_bridge=1e-3") == (["optim", "lr_bridge"], "1e-3")
    assert parse_override("data.lm_prefix=null") == (["data", "lm_prefix"], None)
    assert parse_override("data.lm_prompt=a=b") == (["data", "lm_prompt"], "a=b")  # only the first '=' splits
    cfg = make(
        [
            "max_steps=7",
            "num_epochs=null",
            "optim.lr_bridge=3e-4",
            "optim.schedule=cosine",
            "optim.warmup_steps=2",
            "data.train.0.max_examples=50",
            "data.train=[{path: a.jsonl}, {path: b.txt, txt_unit: paragraph}]",
            "data.train.1.max_examples=5",
            "report_to=tensorboard",  # a single item where a list is expected
            "model.freeze_encoder=false",
        ]
    )
    assert cfg.max_steps == 7 and cfg.num_epochs is None
    assert cfg.optim.lr_bridge == pytest.approx(3e-4) and cfg.optim.schedule == "cosine"
    assert [s.path for s in cfg.data.train] == ["a.jsonl", "b.txt"]
    assert cfg.data.train[1].txt_unit == "paragraph" and cfg.data.train[1].max_examples == 5
    assert cfg.report_to == ["tensorboard"] and cfg.model.freeze_encoder is False
    # Overrides never touch the caller's dict.
    assert MINIMAL == {"data": {"train": [{"path": "train.jsonl"}]}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("max_steps", "not of the form key=value"),
        ("=3", "empty key"),
        ("optim..lr_bridge=1", "empty key"),
        ("data.train.3.path=x", "index below 1"),
        ("data.train.first.path=x", "index below 1"),
        ("batch_size.inner=3", "batch_size is a value, not a section"),
        ("data.lm_prompt=[unclosed", "not valid YAML"),
    ],
)
def test_malformed_overrides_are_rejected(override, expected):
    with pytest.raises(ConfigError) as err:
        apply_overrides({"data": {"train": [{"path": "a"}]}, "batch_size": 2}, [override])
    assert expected in str(err.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found; see configs/"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


# ----------------------------------------------------------------------------- shipped configs


def test_default_config_is_the_embedded_pair_on_english_gsm8k():
    cfg = load_config(CONFIGS / "default.yaml")
    assert (cfg.model.encoder, cfg.model.lm) == ("e5-small", "smollm2-135m-instruct")
    assert cfg.model.freeze_encoder and cfg.data.mode == "labeled" and cfg.data.template == "chatml"
    assert cfg.data.train[0].path == "gsm8k/train.jsonl" and cfg.data.train[0].hub == "openai/gsm8k"
    assert cfg.mixed_precision == "auto" and cfg.max_steps is not None and cfg.data.eval_size > 0
    assert cfg.save_interval > 0 and cfg.eval_interval > 0


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_configs_carry_the_paper_settings(path):
    cfg = load_config(path)
    assert cfg.optim.lr_bridge == pytest.approx(6e-4) and cfg.optim.lr_encoder == pytest.approx(2e-5)
    assert cfg.optim.schedule == "constant" and cfg.effective_batch_size == 128
    assert cfg.model.bridge == "linear" and "mt5-x" in cfg.model.encoder
    # Model configs for --dry-run are resolved next to the YAML, whatever the working directory.
    assert Path(cfg.model.encoder_config).is_file() and Path(cfg.model.lm_config).is_file()
    (source,) = cfg.data.train
    instruction_tuned = cfg.data.mode == "labeled"
    # The encoder is frozen for instruction-tuned LMs and trained for base LMs.
    assert cfg.model.freeze_encoder == instruction_tuned
    if instruction_tuned:
        assert source.max_examples == 200_000
        assert (cfg.data.template, source.hub) in {
            ("metamath", "meta-math/MetaMathQA"),
            ("orca2", "Open-Orca/OpenOrca"),
        }
    else:
        assert (cfg.data.max_encoder_length, cfg.data.max_lm_length) == (1024, 128)
        assert source.hub in {"EleutherAI/proof-pile-2", "bigcode/starcoderdata"}
        assert cfg.data.streaming and cfg.max_steps * cfg.effective_batch_size >= 200_000


def test_paper_configs_cover_the_paper_models():
    lms = {load_config(p).model.lm for p in PAPER}
    assert lms == {
        "meta-math/MetaMath-7B-V1.0",
        "meta-math/MetaMath-13B-V1.0",
        "microsoft/Orca-2-7b",
        "EleutherAI/llemma_7b",
        "codellama/CodeLlama-7b-hf",
    }
    encoders_13b = {load_config(p).model.encoder for p in PAPER if "13b" in p.stem}
    assert encoders_13b == {"google/mt5-xl", "google/mt5-xxl"}


def test_accelerate_configs_parse():
    found = {p.stem: yaml.safe_load(p.read_text()) for p in (CONFIGS / "accelerate").glob("*.yaml")}
    assert {"ddp", "ddp_cpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3"} <= set(found)
    assert found["deepspeed_zero2"]["deepspeed_config"]["zero_stage"] == 2
    assert found["deepspeed_zero3"]["deepspeed_config"]["zero_stage"] == 3
    assert found["fsdp"]["distributed_type"] == "FSDP"
    assert found["ddp_cpu"]["num_processes"] == 2 and found["ddp_cpu"]["mixed_precision"] == "no"


# ----------------------------------------------------------------------------- CLI


def test_cli_reports_config_errors_in_one_line_and_prints_the_config(tmp_path, capsys):
    from langbridge.cli import main

    assert main(["train", str(CONFIGS / "default.yaml"), "optim.lr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lr'" in err and "lr_bridge" in err and "Traceback" not in err
    assert main(["train", str(CONFIGS / "default.yaml"), "max_steps=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["max_steps"] == 3
    # The printed config is itself a valid config that loads to the same values.
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(printed))
    assert (
        load_config(tmp_path / "c.yaml").to_dict()
        == load_config(CONFIGS / "default.yaml", ["max_steps=3"]).to_dict()
    )


def test_docs_reference_every_config_key():
    """docs/training.md's config reference stays complete when keys are added."""
    import dataclasses

    from langbridge.training.config import DataSource

    docs = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    missing = [key for key in allowed_keys() if f"| `{key}` |" not in docs]
    missing += [f.name for f in dataclasses.fields(DataSource) if f"| `{f.name}` |" not in docs]
    assert not missing, f"document these keys in docs/training.md: {missing}"
