"""Backends on tiny random models: log-likelihoods against a direct computation, batching invariance,
XCOPA and MGSM end to end through `evaluate` and the CLI, and (marked) the real default pair."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from conftest import require_shared
from transformers import AutoModelForCausalLM, AutoTokenizer

from langbridge.evaluation import (
    CausalLMBackend,
    GenerationRequest,
    LangBridgeBackend,
    LoglikelihoodRequest,
    evaluate,
    load_backend,
    numbers_equal,
)
from langbridge.evaluation.cli import add_parsers

LL_REQUESTS = [
    LoglikelihoodRequest("Mtu alifungua bomba kwa hiyo", " choo kilijaa maji."),
    LoglikelihoodRequest("Mtu alifungua bomba kwa hiyo", " maji yalitoka."),
    LoglikelihoodRequest("Janet has 16 eggs because", " she sells 3."),
    LoglikelihoodRequest("What is 2 plus 3?", " The answer is 5."),
    LoglikelihoodRequest("ジャネットのアヒル", "は卵を産みます。"),
]


def _manual_langbridge_ll(model, processor, request: LoglikelihoodRequest) -> float:
    """log P(continuation | context) computed directly from the core API, one example at a time."""
    batch = processor(
        [request.context], targets=[request.continuation.lstrip()], append_eos=False, padding_side="right"
    )
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    labels = batch["labels"][0, 1:]
    keep = labels != -100
    return float(logp[keep].gather(-1, labels[keep].unsqueeze(-1)).sum())


def test_langbridge_loglikelihood_matches_direct_computation(tiny_langbridge) -> None:
    model, processor = tiny_langbridge("bert", "llama")
    backend = LangBridgeBackend(model, processor, batch_size=4)
    batched = backend.loglikelihood(LL_REQUESTS)
    expected = [_manual_langbridge_ll(model, processor, r) for r in LL_REQUESTS]
    assert batched == pytest.approx(expected, abs=1e-4)
    assert all(v < 0 for v in batched)
    # Shared contexts run the encoder once; the result must not depend on batch composition.
    assert backend.loglikelihood(LL_REQUESTS[1:2]) == pytest.approx(batched[1:2], abs=1e-4)


def _manual_causal_ll(lm, tokenizer, request: LoglikelihoodRequest) -> float:
    ctx = tokenizer(request.context)["input_ids"]
    whole = tokenizer(request.context + request.continuation)["input_ids"]
    assert whole[: len(ctx)] == ctx
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([whole])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@pytest.mark.parametrize("lm_name", ["llama", "gpt2"])
def test_causal_lm_loglikelihood_matches_direct_computation(tiny_dirs, lm_name: str) -> None:
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs[lm_name]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs[lm_name])
    backend = CausalLMBackend(lm, tokenizer, batch_size=3)
    requests = LL_REQUESTS[2:]  # contexts whose joint tokenization keeps the context tokens
    assert backend.loglikelihood(requests) == pytest.approx(
        [_manual_causal_ll(lm, tokenizer, r) for r in requests], abs=1e-4
    )


def test_generation_is_batch_invariant_and_stops(tiny_langbridge, tiny_dirs) -> None:
    model, processor = tiny_langbridge("bert", "llama")
    backends = [
        LangBridgeBackend(model, processor, batch_size=4),
        CausalLMBackend(
            AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval(),
            AutoTokenizer.from_pretrained(tiny_dirs["llama"]),
            batch_size=4,
        ),
    ]
    texts = [
        "What is 2 plus 3?",
        "Janet has 16 eggs and sells 3 of them every day at the market.",
        "Swali: Janet?",
    ]
    requests = [GenerationRequest(encoder_text=t, full_prompt=t, max_new_tokens=6) for t in texts]
    for backend in backends:
        together = backend.generate(requests)
        alone = [backend.generate([r])[0] for r in requests]
        assert together == alone  # left padding and position ids keep examples independent
        assert all(isinstance(t, str) and t for t in together)
        # Cutting at a stop string: stop at the second character of the first output.
        stop = together[0][1:3]
        if stop.strip():
            cut = backend.generate([GenerationRequest(texts[0], texts[0], max_new_tokens=6, stop=(stop,))])[0]
            assert cut == together[0][: together[0].find(stop)]


def test_sampled_copies_share_one_prompt(tiny_langbridge) -> None:
    model, processor = tiny_langbridge("bert", "llama")
    backend = LangBridgeBackend(model, processor, batch_size=8)
    calls = []
    original = backend._generate_batch
    backend._generate_batch = lambda reqs, n: calls.append((len(reqs), n)) or original(reqs, n)
    req = GenerationRequest(
        "def add(a, b):", "def add(a, b):", max_new_tokens=4, do_sample=True, temperature=1.0
    )
    torch.manual_seed(0)
    outs = backend.generate([req] * 4)
    assert len(outs) == 4 and calls == [(1, 4)]  # one prompt, four return sequences: the encoder runs once
    torch.manual_seed(0)
    assert backend.generate([req] * 4) == outs  # seeded sampling is reproducible


def test_prompt_styles(tiny_langbridge, tiny_dirs) -> None:
    model, processor = tiny_langbridge("bert", "gpt2", processor_kwargs={"lm_prompt": "Answer:"})
    backend = LangBridgeBackend(model, processor)
    assert backend.prompt_style().instruct  # the checkpoint has an LM prompt
    style = backend.prompt_style("instruct", "metamath")
    assert style.wrap_encoder("Q?").endswith("### Instruction:\nQ?\n\n### Response:\n")
    assert not backend.prompt_style("base").instruct
    with pytest.raises(ValueError, match="Unknown instruction template"):
        backend.prompt_style("auto", "vicuna")
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["gpt2"])
    assert not CausalLMBackend(lm, tokenizer).prompt_style().instruct  # no chat template: base LM
    tokenizer.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    style = CausalLMBackend(lm, tokenizer).prompt_style()
    assert style.instruct and style.wrap("hi") == "<u>hi</u><a>"


def _xcopa_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "xcopa" / "data" / "sw"
    folder.mkdir(parents=True)
    rows = [
        {
            "premise": f"Mtu {i} alifungua bomba.",
            "choice1": "Choo kilijaa maji.",
            "choice2": f"Maji {i} yalitoka.",
            "question": "effect" if i % 2 else "cause",
            "label": i % 2,
            "idx": i,
        }
        for i in range(6)
    ]
    (folder / "test.sw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path / "data"


def test_xcopa_on_tiny_langbridge_is_deterministic(tiny_langbridge, tmp_path: Path) -> None:
    model, processor = tiny_langbridge("mt5", "gpt2")
    data = _xcopa_dir(tmp_path)
    runs = []
    for bs in (1, 4):
        backend = LangBridgeBackend(model, processor, batch_size=bs)
        out = tmp_path / f"out{bs}"
        results = evaluate(backend, "xcopa", languages="sw", data_dir=data, output_dir=out, progress=False)
        rows = [json.loads(line) for line in (out / "predictions" / "xcopa.jsonl").read_text().splitlines()]
        runs.append((results["tasks"]["xcopa"]["scores"]["sw"], [r["output"] for r in rows]))
        assert all(r["correct"] == (r["extracted"] == r["gold"]) for r in rows)
        assert all(r["extracted"] == max((0, 1), key=lambda i: r["output"][i]) for r in rows)
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langbridge")
    add_parsers(parser.add_subparsers(dest="command"))
    return parser


def test_cli_eval_checkpoint_and_lm_only(tiny_langbridge, tiny_dirs, tmp_path: Path, capsys) -> None:
    root = require_shared("mgsm").parent
    # The tiny BERT has 160 positions; few-shot prompts are longer and keep their end.
    model, processor = tiny_langbridge("bert", "llama", processor_kwargs={"max_encoder_length": 128})
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    out = tmp_path / "lb"
    argv = [
        "eval",
        str(ckpt),
        "--tasks",
        "mgsm",
        "--languages",
        "en,sw",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--prompt-style",
        "base",
        "--num-fewshot",
        "1",
        "--data-dir",
        str(root),
        "--output",
        str(out),
        "--no-progress",
    ]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["backend"] == "langbridge" and results["tasks"]["mgsm"]["n"] == {"en": 2, "sw": 2}
    rows = [json.loads(line) for line in (out / "predictions" / "mgsm.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("Question: Roger has 5 tennis balls.") and "lm_prompt" in rows[0]
    assert "| ckpt |" in capsys.readouterr().out

    base = tmp_path / "lm"
    args = _parser().parse_args(
        [*argv[:1], tiny_dirs["llama"], *argv[2:-3], "--output", str(base), "--lm-only", "--no-progress"]
    )
    assert args.func(args) == 0
    assert json.loads((base / "results.json").read_text())["backend"] == "causal-lm"
    args = _parser().parse_args(["compare", str(base), str(out)])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "| llama |" in table and "| ckpt |" in table

    with pytest.raises(ValueError, match="--lm-only"):
        load_backend(tiny_dirs["llama"])  # a plain LM without --lm-only


@pytest.mark.real_models
def test_real_default_pair_on_mgsm(tmp_path: Path) -> None:
    """The default pair (a freshly built, untrained bridge) and SmolLM2 alone on one MGSM question in every
    language: the whole pipeline on real tokenizers and scripts, not the scores."""
    root = require_shared("mgsm").parent
    pytest.importorskip("gguf", reason="the default pair needs the default-models extra (pip install gguf)")
    from langbridge import LangBridgeModel, LangBridgeProcessor
    from langbridge.pretrained import DEFAULT_ENCODER, DEFAULT_LM, resolve_pretrained

    try:
        encoder_dir, lm_dir = resolve_pretrained(DEFAULT_ENCODER), resolve_pretrained(DEFAULT_LM)
    except Exception as err:  # the weight packages are not installed
        pytest.skip(f"default models unavailable ({type(err).__name__}: {err}); run scripts/setup.sh")
    torch.manual_seed(0)
    model = LangBridgeModel.from_encoder_and_lm(encoder_dir, lm_dir).eval()
    # SmolLM2's ChatML turn around the soft tokens, as the default training config does.
    processor = LangBridgeProcessor.from_encoder_and_lm(
        encoder_dir,
        lm_dir,
        lm_prefix="<|im_start|>user\n",
        lm_prompt="<|im_end|>\n<|im_start|>assistant\n",
    )
    # Batches of 4 sorted by tokens keep the long Telugu/Bengali prompts (500-850 SmolLM2 tokens) together.
    kwargs = dict(limit=1, max_new_tokens=12, batch_size=4, data_dir=root, progress=False)
    lb = evaluate(
        LangBridgeBackend(model, processor, name="lb"), "mgsm", output_dir=tmp_path / "lb", **kwargs
    )
    # The LM alone is the bridge's own frozen LM (no second load).
    lm_alone = CausalLMBackend(model.lm, AutoTokenizer.from_pretrained(lm_dir), name="smollm2")
    alone = evaluate(lm_alone, "mgsm", output_dir=tmp_path / "lm", **kwargs)
    langs = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
    for res in (lb, alone):
        entry = res["tasks"]["mgsm"]
        assert entry["n"] == {lang: 1 for lang in langs}
        assert set(entry["summary"]) == {"AVG", "HRL", "LRL"} and entry["low_resource"] == [
            "bn",
            "sw",
            "te",
            "th",
        ]
        assert res["timing"]["mgsm"]["examples"] == len(langs) and res["timing"]["mgsm"]["examples_per_s"] > 0
    for name in ("lb", "lm"):
        rows = [
            json.loads(line)
            for line in (tmp_path / name / "predictions" / "mgsm.jsonl").read_text().splitlines()
        ]
        assert len(rows) == len(langs) and any(r["output"].strip() for r in rows)
        # Zero-shot in SmolLM2's chat format: the LM alone reads the templated question; the LangBridge
        # encoder reads the bare question and the LM continues after the assistant opener.
        prompt_key = "lm_prompt" if name == "lb" else "prompt"
        assert all("<|im_start|>assistant" in r[prompt_key] for r in rows)
        assert all(r["correct"] == numbers_equal(r["extracted"], r["gold"]) for r in rows)
