"""The lm-evaluation-harness backend on tiny models: registration, the three request types against the
evaluation backend, and `--model langbridge --model_args pretrained=CKPT` through lm-eval's own CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is an optional dependency: pip install 'langbridge[lm-eval]'"
)

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from langbridge.evaluation import GenerationRequest, LangBridgeBackend, LoglikelihoodRequest  # noqa: E402
from langbridge.evaluation.lm_eval_backend import LangBridgeLM  # noqa: E402

CONTEXTS = [
    ("Mtu alifungua bomba kwa hiyo", " maji yalitoka."),
    ("Mtu alifungua bomba kwa hiyo", " choo kilijaa maji."),
    ("Janet has 16 eggs because", " she sells 3."),
    ("", "What is 2 plus 3?"),  # empty context: the encoder reads only its end-of-sequence token
]


def _instances(kind: str, args_list: list[tuple]) -> list[Instance]:
    return [
        Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=("t", i, 1))
        for i, args in enumerate(args_list)
    ]


def test_registered_by_name_next_to_builtin_models(tiny_dirs) -> None:
    assert get_model("langbridge") is LangBridgeLM
    # Importing our module first must not keep lm-eval from registering its own models.
    assert get_model("dummy").__name__ == "DummyLM"
    with pytest.raises(ValueError, match="pretrained="):
        LangBridgeLM.create_from_arg_string("", {"batch_size": "4"})
    with pytest.raises(ValueError, match="--model hf"):
        LangBridgeLM.create_from_arg_string(f"pretrained={tiny_dirs['llama']}", {"device": "cpu"})


def test_loglikelihood_and_generate_match_the_backend(tiny_langbridge) -> None:
    model, processor = tiny_langbridge("bert", "llama")
    backend = LangBridgeBackend(model, processor, batch_size=3)
    lm = LangBridgeLM.from_backend(backend, max_gen_toks=6)

    shuffled = random.Random(0).sample(CONTEXTS, len(CONTEXTS))
    got = lm.loglikelihood(_instances("loglikelihood", shuffled), disable_tqdm=True)
    expected = backend.loglikelihood_with_greedy([LoglikelihoodRequest(c, x) for c, x in shuffled])
    assert [g for _, g in got] == [g for _, g in expected]
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-4)
    assert all(isinstance(lp, float) and lp < 0 and isinstance(g, bool) for lp, g in got)

    prompts = ["What is 2 plus 3?", "Janet has 16 eggs and sells 3 of them", "Swali: Janet ana mayai 16."]
    free = lm.generate_until(_instances("generate_until", [(p, {"until": []}) for p in prompts]), True)
    reference = backend.generate([GenerationRequest(p, p, max_new_tokens=6) for p in prompts])
    assert free == reference
    # A stop string cuts the output where it first occurs.
    cut = next(o for o in free if len(o) > 2)[1:3]
    stopped = lm.generate_until(
        _instances("generate_until", [(p, {"until": [cut], "max_gen_toks": 6}) for p in prompts]), True
    )
    assert all(cut not in s and f.startswith(s) for s, f in zip(stopped, free, strict=True))
    assert any(len(s) < len(f) for s, f in zip(stopped, free, strict=True))
    with pytest.raises(ValueError, match="apply_chat_template"):
        lm.apply_chat_template([{"role": "user", "content": "hi"}])


def test_loglikelihood_rolling_covers_the_text_in_windows(tiny_langbridge) -> None:
    # A short LM budget forces several windows.
    model, processor = tiny_langbridge("bert", "gpt2", processor_kwargs={"max_lm_length": 16})
    lm = LangBridgeLM.from_backend(LangBridgeBackend(model, processor, batch_size=4))
    text = "Janet has 16 eggs and sells 3 of them every day at the market. What is 2 plus 3? The answer is 5."
    windows = lm._windows(text)
    assert len(windows) > 2
    assert "".join(w for _, w in windows) == text
    assert all(ctx == text[: len(ctx)] for ctx, _ in windows)
    (total,) = lm.loglikelihood_rolling(_instances("loglikelihood_rolling", [(text,)]), disable_tqdm=True)
    parts = lm.backend.loglikelihood([LoglikelihoodRequest(c, w) for c, w in windows])
    assert total == pytest.approx(sum(parts), abs=1e-3) and total < 0


TASK_YAML = """task: lb_tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{premise}}}} because"
doc_to_choice: "{{{{[choice1, choice2]}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.mark.slow  # a fresh interpreter importing torch, transformers, datasets and lm-eval
def test_lm_eval_cli_runs_model_langbridge(tiny_langbridge, tmp_path: Path) -> None:
    """`--model langbridge --model_args pretrained=CKPT` through lm-eval's CLI (our module registers first)."""
    model, processor = tiny_langbridge("bert", "llama")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    rows = [
        {"premise": "The man opened the tap", "choice1": "the water ran", "choice2": "he slept", "label": 0},
        {"premise": "Janet has 16 eggs", "choice1": "she sells 3", "choice2": "the sky fell", "label": 0},
        {"premise": "The girl found a bug", "choice1": "she spilled milk", "choice2": "she ate", "label": 1},
    ]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tasks / "lb_tiny_choice.yaml").write_text(TASK_YAML.format(data=data), encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        "-m",
        "langbridge.evaluation.lm_eval_backend",
        "--model",
        "langbridge",
        "--model_args",
        f"pretrained={ckpt},dtype=float32",
        "--tasks",
        "lb_tiny_choice",
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--output_path",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = list(out.rglob("results_*.json"))
    results = json.loads(result_file.read_text())["results"]["lb_tiny_choice"]
    assert 0.0 <= results["acc,none"] <= 1.0
