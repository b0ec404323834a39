"""The official side of the peer benchmark: runs the REAL official LangBridge code (kaistAI/LangBridge checkout,
transformers 4.37.2) in its own process and environment. Never imports this repository (whose package is also
called `langbridge`); benchmarks/peer/run_peer.py starts it with the official environment's Python.

    python official_side.py logits   --checkout DIR --assets DIR --out FILE.pt
    python official_side.py generate --checkout DIR --assets DIR --batch-size B --out FILE.json

`generate` takes the official evaluation harness's generation path: an `LBSeq2SeqLM` (evaluation-harness/lm_eval/
models/langbridge.py) built as python_scripts/eval_langbridge.py builds it, then its `_model_generate` (BOS as the
LM input, `generate` with enc_ids/enc_mask, the harness's stop-sequence criteria, greedy) on consecutive chunks of
`--batch-size` questions tokenized by its `tok_encode_batch_enc`. For equal work every answer is exactly
`--new-tokens` long: the model's generation_config gets min_new_tokens = max_new_tokens and the LM's EOS id (so the
EOS is suppressed until then), and the stop list is the harness's own end-of-text string only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

# Run as a script in the official environment: this folder is on sys.path, langbridge is not installed.
from proc_memory import reset_peak_rss, rss_mb

# The harness's module-level imports that its generation path never uses; stood in (with --allow-stubs) where the
# environment lacks them (the offline GPU machine).
STUBBABLE = ("datasets", "sqlitedict", "sacrebleu", "sklearn", "sklearn.metrics", "omegaconf", "peft")


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    class Absent:
        def __init__(self, *args: Any, **kwargs: Any):
            raise RuntimeError(f"{name} is a stand-in module in this environment")

    module.__getattr__ = lambda attr: "0.0.0" if attr == "__version__" else Absent  # type: ignore[method-assign]
    module.__path__ = []  # a package, so that submodules import
    return module


ADAPTATIONS: list[str] = []


def _adapt_auto_encoder(module: Any) -> None:
    """The one change to the official code's behaviour, made from outside: for an encoder other than (u)mT5,
    LBBaseModel builds `AutoModel(config=enc_config)`, which transformers 4.37 refuses (AutoModel "is designed to
    be instantiated using from_pretrained or from_config"), so the official code cannot build an e5/BERT encoder
    as written. The name AutoModel in its module is pointed at a stand-in whose call is AutoModel.from_config;
    everything else (its from_pretrained use of AutoModel, if any) passes through."""
    from transformers import AutoModel

    class AutoModelFromConfig:
        def __new__(cls, config: Any = None, **kwargs: Any) -> Any:
            return AutoModel.from_config(config, **kwargs)

        from_pretrained = AutoModel.from_pretrained
        from_config = AutoModel.from_config

    module.AutoModel = AutoModelFromConfig
    ADAPTATIONS.append(
        "langbridge.modeling_langbridge.AutoModel(config=...) -> AutoModel.from_config(...) (4.37 refuses the former)"
    )


def import_official(checkout: Path, allow_stubs: bool) -> tuple[Any, Any, Any, list[str]]:
    """(LangBridgeModel, LBLlama, LBSeq2SeqLM, stubbed module names) from the checkout."""
    sys.path[:0] = [str(checkout), str(checkout / "evaluation-harness")]
    from langbridge.modeling_langbridge import LBLlama

    from langbridge import LangBridgeModel  # the official package

    if not Path(sys.modules["langbridge"].__file__).resolve().is_relative_to(checkout.resolve()):
        raise RuntimeError(
            f"imported langbridge from {sys.modules['langbridge'].__file__}, not from {checkout}"
        )
    _adapt_auto_encoder(sys.modules["langbridge.modeling_langbridge"])
    stubbed: list[str] = []
    while True:
        try:
            from lm_eval.models.langbridge import LBSeq2SeqLM

            return LangBridgeModel, LBLlama, LBSeq2SeqLM, stubbed
        except ModuleNotFoundError as err:
            top = (err.name or "").split(".")[0]
            if not allow_stubs or err.name not in STUBBABLE and top not in STUBBABLE or top in stubbed:
                raise
            for name in STUBBABLE:
                if name == top or name.startswith(top + "."):
                    sys.modules[name] = _stub(name)
            stubbed.append(top)
            for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
                del sys.modules[name]


def _dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def load(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    LangBridgeModel, LBLlama, LBSeq2SeqLM, stubbed = import_official(Path(args.checkout), args.allow_stubs)
    assets = Path(args.assets)
    # As python_scripts/eval_langbridge.py loads it (its dtype is bf16; fp32 on CPU here). The LM class is named
    # explicitly: the official lookup goes by hub-id prefixes (meta-llama/..., EleutherAI/llemma, ...) and SmolLM2
    # is a Llama under another name.
    model, info = LangBridgeModel.from_pretrained(
        str(assets / "official" / "checkpoint"),
        torch_dtype=_dtype(args.dtype),
        model_class=LBLlama,
        output_loading_info=True,
    )
    missing = [k for k in info["missing_keys"] if ".pooler." not in k]
    if missing or info["unexpected_keys"] or info["mismatched_keys"]:
        raise RuntimeError(f"official checkpoint did not load cleanly: {info}")
    enc_tok = AutoTokenizer.from_pretrained(str(assets / "official" / "encoder"))
    lm_tok = AutoTokenizer.from_pretrained(str(assets / "official" / "lm"))
    if not enc_tok.pad_token:
        enc_tok.pad_token = enc_tok.eos_token
    if not lm_tok.pad_token:
        lm_tok.pad_token = lm_tok.eos_token
    lm_config = model.lb.lm.config
    return {
        "model": model,
        "enc_tok": enc_tok,
        "lm_tok": lm_tok,
        "LBSeq2SeqLM": LBSeq2SeqLM,
        "meta": {
            "transformers": transformers.__version__,
            "torch": str(torch.__version__),
            "python": sys.version.split()[0],
            "harness_stubbed_modules": stubbed,
            "adaptations": ADAPTATIONS,
            "official_langbridge_file": sys.modules["langbridge"].__file__,
            "lm_rope_theta": getattr(lm_config, "rope_theta", None),
            "lm_attn_implementation": getattr(lm_config, "_attn_implementation", None),
            "encoder_attn_implementation": getattr(model.lb.enc.config, "_attn_implementation", None),
            "missing_keys_ignored": [k for k in info["missing_keys"] if ".pooler." in k],
            "threads": torch.get_num_threads(),
            "dtype": args.dtype,
            "device": args.device,
        },
    }


def cmd_logits(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    assets = Path(args.assets)
    request = json.loads((assets / "logit_check.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    with torch.no_grad():
        # 1. The LM alone, from the 4.37-readable copy (its own from_pretrained, its own tokenizer).
        lm_dir = assets / "official" / "lm"
        tok = AutoTokenizer.from_pretrained(str(lm_dir))
        lm = AutoModelForCausalLM.from_pretrained(str(lm_dir), torch_dtype=torch.float32).eval()
        ids = tok(request["lm_text"], return_tensors="pt")["input_ids"]
        out["lm_input_ids"] = ids[0].tolist()
        out["lm_logits"] = lm(input_ids=ids).logits[0].float()
        out["lm_rope_theta"] = getattr(lm.config, "rope_theta", None)
        del lm
        # 2. The whole official LangBridge forward on one question, as the harness lays it out (BOS as LM input).
        loaded = load(args)
        model, enc_tok, lm_tok = loaded["model"], loaded["enc_tok"], loaded["lm_tok"]
        model.to(args.device).eval()
        enc = enc_tok([request["question"]], padding=True, add_special_tokens=True, return_tensors="pt")
        enc = enc.to(args.device)
        input_ids = torch.tensor([[lm_tok.bos_token_id]], device=args.device)
        logits = model(
            enc_ids=enc["input_ids"],
            enc_mask=enc["attention_mask"],
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
        ).logits[0]
        out["lb_enc_ids"] = enc["input_ids"][0].tolist()
        out["lb_logits"] = logits.float().cpu()
        out["meta"] = loaded["meta"]
    torch.save(out, args.out)


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    loaded = load(args)
    model, enc_tok, lm_tok = loaded["model"], loaded["enc_tok"], loaded["lm_tok"]
    questions = json.loads((Path(args.assets) / "questions.json").read_text(encoding="utf-8"))[
        "encoder_texts"
    ]
    questions = questions[: args.questions] if args.questions else questions
    device = args.device
    lm = loaded["LBSeq2SeqLM"](
        model=model, enc_tokenizer=enc_tok, lm_tokenizer=lm_tok, batch_size=args.batch_size, device=device
    )
    # Equal work: exactly new_tokens per answer (see the module docstring).
    gen = model.generation_config
    gen.min_new_tokens = args.new_tokens
    gen.eos_token_id = lm_tok.eos_token_id
    gen.pad_token_id = lm_tok.pad_token_id
    until = [lm.eot_token]  # what greedy_until always appends; the task's stop strings are left out

    def run(chunk: list[str], max_tokens: int) -> Any:
        return lm._model_generate(inputs=lm.tok_encode_batch_enc(chunk), max_tokens=max_tokens, stop=until)

    gen.min_new_tokens = 2
    run(questions[:1], 2)  # warm-up: first-call allocations, thread pools
    gen.min_new_tokens = args.new_tokens
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    load_peak = rss_mb("VmHWM")  # loading included; reset next, so the peak below is generation's
    reset = reset_peak_rss()
    tokens: list[list[int]] = []
    texts: list[str] = []
    start = time.perf_counter()
    for i in range(0, len(questions), args.batch_size):
        out = run(questions[i : i + args.batch_size], args.new_tokens)
        new = out[:, 1:]  # the harness's LM input is the BOS alone
        tokens += new.tolist()
        texts += lm.tok_decode(out.tolist())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_tokens = sum(len(t) for t in tokens)
    result = {
        "system": "official",
        "mode": f"harness _model_generate, batch {args.batch_size}",
        "batch_size": args.batch_size,
        "questions": len(questions),
        "new_tokens_requested": args.new_tokens,
        "new_tokens": [len(t) for t in tokens],
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds,
        "tokens": tokens,
        "texts": texts,
        "peak_rss_mb": rss_mb("VmHWM") if reset else None,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "meta": loaded["meta"],
    }
    result["peak_rss_process_mb"] = max(filter(None, [load_peak, result["peak_rss_mb"]]), default=None)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    print(
        f"official batch {args.batch_size}: {n_tokens} tokens in {seconds:.1f} s = {n_tokens / seconds:.2f} tokens/s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("logits", "generate"))
    p.add_argument("--checkout", required=True, help="the official repository checkout (kaistAI/LangBridge)")
    p.add_argument("--assets", required=True, help="the folder run_peer.py prepared")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--questions", type=int, default=0, help="first N questions (default: all prepared)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--allow-stubs", action="store_true", help="stand in absent harness-only imports")
    args = p.parse_args(argv)
    {"logits": cmd_logits, "generate": cmd_generate}[args.command](args)


if __name__ == "__main__":
    main()
