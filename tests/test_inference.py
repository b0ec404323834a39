"""`langbridge generate` / `chat` and the top-level CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from langbridge.cli import build_parser, main
from langbridge.inference import TextGenerator


@pytest.fixture()
def checkpoint(tmp_path, tiny_langbridge):
    model, processor = tiny_langbridge(processor_kwargs={"lm_prompt": " A:"})
    model.save_pretrained(tmp_path / "ckpt", adapter_only=True)
    processor.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_cli_lists_every_subcommand():
    help_text = build_parser().format_help()
    for command in (
        "train",
        "eval",
        "compare",
        "analyze",
        "generate",
        "chat",
        "convert-official",
        "prepare-models",
    ):
        assert command in help_text


def test_generate_writes_jsonl_in_input_order(tmp_path, checkpoint):
    inputs = tmp_path / "in.txt"
    inputs.write_text("Janet ana mayai 16.\n\nWhat is 2 plus 3?\n")
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                str(checkpoint),
                "珍妮的鸭子",
                "--file",
                str(inputs),
                "--output",
                str(out),
                "--max-new-tokens",
                "4",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["珍妮的鸭子", "Janet ana mayai 16.", "What is 2 plus 3?"]
    # Batched output equals one-by-one output.
    generator = TextGenerator.load(str(checkpoint))
    for row in rows:
        assert generator.generate([row["text"]], max_new_tokens=4, do_sample=False)[0] == row["output"]


def test_generate_lm_only_and_errors(tmp_path, checkpoint, tiny_dirs, capsys):
    assert main(["generate", tiny_dirs["llama"], "hello", "--lm-only", "--max-new-tokens", "3"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["text"] == "hello"
    assert main(["generate", str(checkpoint), "hello", "--lm-only", "--max-new-tokens", "3"]) == 0
    assert main(["generate", tiny_dirs["llama"], "hello"]) == 1
    assert "not a LangBridge checkpoint" in capsys.readouterr().err
    assert main(["generate", str(checkpoint)]) == 1
    assert "No input" in capsys.readouterr().err


def test_chat_streams_answers(checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "langbridge.cli", "chat", str(checkpoint), "--max-new-tokens", "3"],
        input="Habari yako?\nexit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "LangBridge chat" in result.stdout and ">>> " in result.stdout


def test_greedy_generation_runs_continuous_batching_with_generate_outputs(checkpoint, tiny_dirs):
    texts = [
        "珍妮的鸭子",
        "Janet ana mayai 16 kila siku.",
        "What is 2 plus 3?",
        "x",
        "Roger has 5 tennis balls.",
    ]
    greedy = dict(max_new_tokens=6, num_beams=1, do_sample=False, temperature=None, top_p=None, top_k=None)
    for generator in (
        TextGenerator.load(str(checkpoint)),
        TextGenerator.load(tiny_dirs["llama"], lm_only=True),
    ):
        assert generator._greedy_settings(greedy) == (6, [])
        assert generator._greedy_settings({**greedy, "max_length": 4096, "stop_strings": ["\n\n"]}) == (
            6,
            ["\n\n"],
        )
        continuous = generator.generate(texts, batch_size=2, **greedy)
        assert continuous == generator.generate(texts, batch_size=1, continuous_batching=False, **greedy)
        # Beams, sampling and logits processing are left to `generate`.
        assert generator._greedy_settings({**greedy, "num_beams": 2}) is None
        assert generator._greedy_settings({**greedy, "do_sample": True}) is None
        assert generator._greedy_settings({**greedy, "repetition_penalty": 1.3}) is None
        generator.model.generation_config.no_repeat_ngram_size = 2  # a checkpoint's own setting counts too
        assert generator._greedy_settings(greedy) is None
