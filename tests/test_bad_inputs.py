"""Issue 17's catalogue of bad inputs: each gets a clear one-line error naming the problem and the fix.

Checkpoint loading (items 1, 7) is in test_checkpoint_safety.py, convert-official's destination (item 2) in
test_convert_official.py, the code sandbox (items 3, 4) in test_sandbox_escapes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_training_run import base_config, write_yaml

from langbridge.training import train
from langbridge.training.config import ConfigError, config_from_dict
from langbridge.training.recipe import TrainingDiverged


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    """The error output, which must be exactly one line (progress bars of model loading aside)."""
    lines = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.strip() and "\r" not in line and "it/s]" not in line
    ]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- item 6: non-finite training


@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
def test_non_finite_learning_rate_is_refused(tiny_dirs, tmp_path: Path, value: float) -> None:
    cfg = base_config(tiny_dirs, tmp_path)
    cfg["optim"] = {"lr_bridge": value}
    with pytest.raises(ConfigError, match="optim.lr_bridge"):
        config_from_dict(cfg)


@pytest.mark.parametrize("text", [".inf", ".nan", "-.inf"])
def test_non_finite_learning_rate_on_the_command_line_exits_2(
    tiny_dirs, tmp_path: Path, capsys, text: str
) -> None:
    from langbridge.cli import main

    config = write_yaml(base_config(tiny_dirs, tmp_path), tmp_path / "c.yaml")
    assert main(["train", str(config), f"optim.lr_encoder={text}"]) == 2
    assert "optim.lr_encoder" in one_line_error(capsys)


@pytest.fixture
def loss_turns_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's training loss becomes NaN from the third forward pass on (as after a bad update)."""
    from langbridge.modeling import LangBridgeModel

    original, calls = LangBridgeModel.forward, []

    def forward(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) >= 3 and out.loss is not None:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LangBridgeModel, "forward", forward)


def test_diverging_loss_stops_the_run_without_saving_a_final_adapter(
    tiny_dirs, tmp_path: Path, capsys, loss_turns_nan: None
) -> None:
    cfg = base_config(tiny_dirs, tmp_path, max_steps=6, eval_interval=0, save_interval=1)
    with pytest.raises(TrainingDiverged, match="became nan at step 3"):
        train(config_from_dict(cfg))
    run = tmp_path / "run"
    assert not (run / "final").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_diverging_loss_is_one_line_on_the_command_line(
    tiny_dirs, tmp_path: Path, capsys, loss_turns_nan: None
) -> None:
    from langbridge.cli import main

    cfg = base_config(tiny_dirs, tmp_path, max_steps=6, eval_interval=0)
    capsys.readouterr()
    assert main(["train", str(write_yaml(cfg, tmp_path / "c.yaml"))]) == 2
    err = one_line_error(capsys)
    assert "loss became nan" in err and "lr_bridge" in err
    assert not (tmp_path / "run" / "final").exists()


# ----------------------------------------------------------------------------- item 9: generation settings


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--num-beams", "0"], "--num-beams 0: must be >= 1"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--do-sample", "--top-p", "0"], "--top-p 0.0: must be in (0, 1]"),
        (["--do-sample", "--top-p", "1.5"], "--top-p 1.5"),
        (["--do-sample", "--temperature", "0"], "--temperature 0.0: must be a number > 0"),
        (["--do-sample", "--temperature", "nan"], "--temperature nan"),
        (["--temperature", "0.3"], "--temperature only apply to sampling; add --do-sample"),
        (["--top-p", "0.5"], "--top-p only apply to sampling"),
    ],
)
def test_invalid_generation_settings_are_one_line_errors(
    tmp_path: Path, capsys, flags: list[str], expected: str
) -> None:
    from langbridge.cli import main

    # The checkpoint does not exist: the settings are checked before anything is loaded.
    assert main(["generate", str(tmp_path / "no-model"), "hello", *flags]) == 1
    assert expected in one_line_error(capsys)


def test_valid_sampling_settings_reach_generate() -> None:
    import argparse

    from langbridge.inference import _generation_kwargs

    args = argparse.Namespace(
        max_new_tokens=4, num_beams=1, do_sample=True, temperature=None, top_p=1.0, stop=None, batch_size=1
    )
    assert _generation_kwargs(args) == {
        "max_new_tokens": 4,
        "num_beams": 1,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 1.0,
    }


@pytest.mark.parametrize("texts", [None, 3, b"bytes", ["ok", None], ["ok", 5], {"text": "x"}])
def test_processor_rejects_non_text_with_a_type_error(tiny_langbridge, texts) -> None:
    _, processor = tiny_langbridge()
    with pytest.raises(TypeError, match="str"):
        processor(texts)


def test_processor_still_takes_tuples_and_generators(tiny_langbridge) -> None:
    _, processor = tiny_langbridge()
    a = processor(("What is 2 plus 3?",))
    b = processor(t for t in ["What is 2 plus 3?"])
    assert a["input_ids"].tolist() == b["input_ids"].tolist()


def test_generate_rejects_inputs_embeds(tiny_langbridge) -> None:
    import torch

    model, processor = tiny_langbridge()
    batch = processor(["What is 2 plus 3?"])
    embeds = model.lm.get_input_embeddings()(batch["input_ids"])
    with pytest.raises(ValueError, match="does not take inputs_embeds"):
        model.generate(**batch, inputs_embeds=embeds, max_new_tokens=2)
    with torch.no_grad():
        assert model.generate(**batch, max_new_tokens=2, do_sample=False).shape[0] == 1


# ----------------------------------------------------------------------------- item 5: files that are not UTF-8

BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"


def test_non_utf8_yaml_config_names_the_file_and_exits_2(tmp_path: Path, capsys) -> None:
    from langbridge.cli import main

    config = tmp_path / "c.yaml"
    config.write_bytes(b"max_steps: 2\noutput_dir: caf\xe9\n")  # Latin-1, not UTF-8
    assert main(["train", str(config)]) == 2
    err = one_line_error(capsys)
    assert f"{config}:2: not UTF-8 text" in err and "UTF-8" in err


def test_non_utf8_data_row_names_the_file_and_line(tiny_dirs, tmp_path: Path, capsys) -> None:
    from langbridge.cli import main

    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n')
    config = write_yaml(base_config(tiny_dirs, tmp_path, max_steps=1), tmp_path / "c.yaml")
    assert main(["train", str(config)]) == 2
    assert f"{data}:2: not UTF-8 text" in one_line_error(capsys)


def test_binary_file_passed_as_jsonl_data(tiny_dirs, tmp_path: Path, capsys) -> None:
    from langbridge.cli import main

    (tmp_path / "train.jsonl").write_bytes(BINARY)
    config = write_yaml(base_config(tiny_dirs, tmp_path, max_steps=1), tmp_path / "c.yaml")
    assert main(["train", str(config)]) == 2
    assert "train.jsonl:1: not UTF-8 text" in one_line_error(capsys)


def test_binary_predictions_given_to_analyze_and_compare(tmp_path: Path, capsys) -> None:
    from langbridge.cli import main

    pred = tmp_path / "mgsm.jsonl"
    pred.write_bytes(BINARY)
    assert main(["analyze", "output-language", str(pred), "--output", str(tmp_path / "out")]) == 2
    assert f"{pred}:1: not UTF-8 text" in one_line_error(capsys)
    results = tmp_path / "results.json"
    results.write_bytes(BINARY)
    assert main(["compare", str(results)]) == 1
    assert f"{results}:1: not UTF-8 text" in one_line_error(capsys)


def test_binary_predictions_file_when_resuming_an_eval(tmp_path: Path) -> None:
    from langbridge.evaluation.runner import read_predictions

    pred = tmp_path / "xcopa.jsonl"
    pred.write_bytes(b'{"key": "a"}\n' + BINARY)
    with pytest.raises(ValueError, match=r"xcopa.jsonl:2: not UTF-8 text"):
        read_predictions(pred)


# ----------------------------------------------------------------------------- item 11: a full disk


def no_space(*args, **kwargs):
    import errno
    import os

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tiny_dirs, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from langbridge.cli import main
    from langbridge.training import checkpoint_io

    original = torch.save

    def torch_save(obj, path, *args, **kwargs):
        if Path(path).parent.name == ".checkpoint-2.tmp":  # checkpoint-1 is written, checkpoint-2 fails
            no_space()
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", torch_save)
    cfg = base_config(tiny_dirs, tmp_path, max_steps=4, eval_interval=0, save_interval=1)
    capsys.readouterr()
    assert main(["train", str(write_yaml(cfg, tmp_path / "c.yaml"))]) == 1
    err = one_line_error(capsys)
    run = tmp_path / "run"
    assert f"disk full while writing {run / '.checkpoint-2.tmp' / 'optimizer.pt'}" in err
    assert f"{run / 'checkpoint-1'} (named in {run / 'latest'}) is intact" in err and "--resume" in err
    assert (run / "latest").read_text().strip() == "checkpoint-1"
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint-1"]
    assert {p.name for p in (run / "checkpoint-1").iterdir()} >= {"optimizer.pt", "trainable.safetensors"}
    monkeypatch.undo()  # space freed: the run resumes from checkpoint-1
    assert main(["train", str(tmp_path / "c.yaml"), "--resume"]) == 0
    assert (run / "final").is_dir() and (run / "latest").read_text().strip() == "checkpoint-3"


def test_full_disk_reported_by_safetensors_in_its_own_error_type(tmp_path: Path, monkeypatch) -> None:
    import torch

    from langbridge.training import checkpoint_io
    from langbridge.utils import DiskFullError

    def save_file(*args, **kwargs):
        # safetensors wraps the OS error in its own exception; only the text says what happened.
        raise RuntimeError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr("safetensors.torch.save_file", save_file)
    (tmp_path / "latest").write_text("checkpoint-1\n")
    tmp = tmp_path / ".checkpoint-2.tmp"
    tmp.mkdir()
    with pytest.raises(DiskFullError) as caught, checkpoint_io.staged_checkpoint(tmp, tmp_path, owner=True):
        checkpoint_io.save_trainer_files(tmp, {"w": torch.zeros(2)}, None, None)
    assert str(caught.value).startswith(f"disk full while writing {tmp / 'trainable.safetensors'}")
    assert "checkpoint-1" in str(caught.value) and not tmp.exists()


def test_full_disk_while_writing_results_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    from langbridge.utils import DiskFullError, atomic_write_text

    results = tmp_path / "results.json"
    results.write_text('{"old": true}\n')
    monkeypatch.setattr("langbridge.utils.os.fsync", no_space)
    with pytest.raises(
        DiskFullError, match=r"disk full while writing .*results\.json .*results\.json was left"
    ):
        atomic_write_text(results, '{"new": true}\n')
    assert results.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_full_disk_while_saving_a_model_removes_the_partial_files(
    tiny_langbridge, tmp_path: Path, monkeypatch
) -> None:
    from langbridge.utils import DiskFullError

    model, _ = tiny_langbridge()
    target = tmp_path / "adapter"
    model.save_pretrained(target, adapter_only=True)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr("langbridge.modeling.save_file", no_space)
    with pytest.raises(DiskFullError, match=f"disk full while writing {target}"):
        model.save_pretrained(target, adapter_only=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


# ----------------------------------------------------------------------------- item 12: Ctrl-C


def test_ctrl_c_while_writing_a_checkpoint_keeps_the_previous_one_and_says_how_to_resume(
    tiny_dirs, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from langbridge.cli import main
    from langbridge.training import checkpoint_io

    original = torch.save

    def torch_save(obj, path, *args, **kwargs):
        if Path(path).parent.name == ".checkpoint-2.tmp":
            raise KeyboardInterrupt
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", torch_save)
    config = write_yaml(
        base_config(tiny_dirs, tmp_path, max_steps=4, eval_interval=0, save_interval=1), tmp_path / "c.yaml"
    )
    capsys.readouterr()
    assert main(["train", str(config), "max_steps=4"]) == 130
    err = one_line_error(capsys)
    run = tmp_path / "run"
    assert err.startswith(f"langbridge train: interrupted; {run / 'checkpoint-1'} is kept")
    assert err.endswith(f"continue with: langbridge train {config} max_steps=4 --resume")
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint-1"]
    monkeypatch.undo()
    assert main(["train", str(config), "max_steps=4", "--resume"]) == 0


def test_ctrl_c_before_any_checkpoint(tiny_dirs, tmp_path: Path, capsys, monkeypatch) -> None:
    from langbridge.cli import main

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("langbridge.training.recipe.train", interrupt)
    config = write_yaml(base_config(tiny_dirs, tmp_path), tmp_path / "c.yaml")
    assert main(["train", str(config)]) == 130
    assert "no checkpoint was written to" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("target", "argv", "expected"),
    [
        (
            "langbridge.evaluation.runner.evaluate",
            ["eval", "some/model", "--tasks", "xcopa", "--output", "{out}"],
            "langbridge eval: interrupted; predictions finished so far are kept in {out}/predictions; rerun the "
            "same command (same --output) to resume",
        ),
        (
            "langbridge.analysis.cli._run_output_language",
            ["analyze", "output-language", "p.jsonl", "--output", "{out}"],
            "langbridge analyze: interrupted; an analysis has no partial results to keep; rerun",
        ),
        (
            "langbridge.experiments.demo.run_demo",
            ["demo", "--output", "{out}"],
            "langbridge demo: interrupted; finished stages (trained checkpoints, scores) are kept in {out}; rerun "
            "the same command to resume",
        ),
    ],
)
def test_ctrl_c_is_one_line_with_exit_code_130(
    tmp_path: Path, capsys, monkeypatch, target: str, argv: list[str], expected: str
) -> None:
    from langbridge.cli import main

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupt)
    out = str(tmp_path / "out")
    assert main([a.format(out=out) for a in argv]) == 130
    assert one_line_error(capsys).startswith(expected.format(out=out))
    monkeypatch.setenv("LANGBRIDGE_DEBUG", "1")  # the traceback on request
    with pytest.raises(KeyboardInterrupt):
        main([a.format(out=out) for a in argv])


# ----------------------------------------------------------------------------- item 10: --lm-only MODEL


@pytest.mark.parametrize("command", [["generate"], ["eval", "--tasks", "xcopa"]])
@pytest.mark.parametrize("name", ["missing-model/", "./missing", "a/b/c"])
def test_lm_only_missing_local_path_says_it_does_not_exist(
    tmp_path: Path, capsys, monkeypatch, command: list[str], name: str
) -> None:
    from langbridge.cli import main

    monkeypatch.chdir(tmp_path)
    argv = [command[0], "--lm-only", name, *(["hello"] if command[0] == "generate" else command[1:])]
    assert main(argv) == 1
    err = one_line_error(capsys)
    assert f"{name}: no such directory; check the path" in err and "Repo id" not in err


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_lm_only_hub_id_while_offline_says_the_hub_is_offline(
    tmp_path: Path, capsys, monkeypatch, command: str
) -> None:
    from langbridge.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rest = ["hello"] if command == "generate" else ["--tasks", "xcopa"]
    assert main([command, "--lm-only", "langbridge-tests/no-such-model", *rest]) == 1
    err = one_line_error(capsys)
    assert (
        "langbridge-tests/no-such-model is not a local folder, and the hub is offline (HF_HUB_OFFLINE=1)"
        in err
    )


def test_lm_only_hub_id_that_fails_to_load_is_one_line(monkeypatch) -> None:
    import huggingface_hub.constants
    import transformers

    from langbridge.evaluation.backends import load_backend

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def from_pretrained(*args, **kwargs):
        raise OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection."
        )

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    # No network in tests: the hub's answers are stubbed.
    monkeypatch.setattr("langbridge.runtime.loading.is_langbridge_checkpoint", lambda source: False)
    with pytest.raises(FileNotFoundError) as caught:
        load_backend("langbridge-tests/no-such-model", lm_only=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "could not load langbridge-tests/no-such-model (not a local folder, so it was looked"
    )
    assert "We couldn't connect" in message


def test_lm_only_local_folder_still_loads(tiny_dirs) -> None:
    from langbridge.inference import TextGenerator

    assert TextGenerator.load(tiny_dirs["llama"], lm_only=True).processor is None


# ----------------------------------------------------------------------------- item 8: missing file, hub fallback


def missing_file_with_hub(tiny_dirs, tmp_path: Path) -> Path:
    cfg = base_config(tiny_dirs, tmp_path, max_steps=1)
    cfg["data"]["train"] = [{"path": "missing.jsonl", "hub": "langbridge-tests/no-such-dataset"}]
    cfg["data"]["data_dir"] = str(tmp_path)
    return write_yaml(cfg, tmp_path / "c.yaml")


def test_missing_file_with_hub_fallback_and_no_datasets_package(
    tiny_dirs, tmp_path: Path, capsys, monkeypatch
) -> None:
    import sys

    from langbridge.cli import main

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(missing_file_with_hub(tiny_dirs, tmp_path))]) == 2
    err = one_line_error(capsys)
    assert err.startswith("langbridge train: data file 'missing.jsonl' not found (looked in: ")
    assert (
        "its fallback, hub dataset 'langbridge-tests/no-such-dataset' needs the `datasets` package: pip install"
        in err
    )
    assert err.endswith(f"or put the file at {tmp_path / 'missing.jsonl'}")


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'langbridge-tests/no-such-dataset' on the Hub\n(more detail)")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)


def test_missing_file_with_hub_fallback_while_offline(
    tiny_dirs, tmp_path: Path, capsys, monkeypatch, unreachable_hub: None
) -> None:
    from langbridge.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(missing_file_with_hub(tiny_dirs, tmp_path))]) == 2
    err = one_line_error(capsys)
    assert err.index("data file 'missing.jsonl' not found") < err.index("langbridge-tests/no-such-dataset")
    assert "cannot be loaded: the hub is offline" in err and "Couldn't reach" in err
    assert f"put the file at {tmp_path / 'missing.jsonl'}, or go online" in err


def test_missing_file_with_hub_fallback_that_fails_online(
    tmp_path: Path, monkeypatch, unreachable_hub: None
) -> None:
    import huggingface_hub.constants

    from langbridge.training.config import DataSource
    from langbridge.training.data import DataError, iter_records

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    source = DataSource(path="missing.jsonl", hub="langbridge-tests/no-such-dataset")
    with pytest.raises(DataError) as caught:
        list(iter_records(source, tmp_path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("data file 'missing.jsonl' not found")
    assert "could not be loaded: Couldn't reach" in message and "check the dataset name" in message
