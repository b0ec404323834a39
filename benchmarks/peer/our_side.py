"""Our side of the peer benchmark (this library, transformers 5), one measurement per process; started by
benchmarks/peer/run_peer.py, which also runs `prepare` (the shared model, its copies and the questions).

    python benchmarks/peer/our_side.py prepare  --assets DIR [--random-weights] [--checkpoint CKPT] ...
    python benchmarks/peer/our_side.py logits   --assets DIR --out FILE.pt
    python benchmarks/peer/our_side.py generate --assets DIR --batch-size B --out FILE.json   # model.generate
    python benchmarks/peer/our_side.py engine   --assets DIR --batch-size B --out FILE.json   # continuous batching
    python benchmarks/peer/our_side.py eval     --assets DIR --out FILE.json                  # langbridge eval

The inputs mirror the official harness: the encoder reads the harness's MGSM context ("Question: ...\\nStep-by-Step
Answer:"), the LM side is the LM's BOS, the bridged encoder states and enc_eos (our processor with lm_prefix = BOS
and no LM prompt), so both systems compute the same sequence, and every answer is exactly --new-tokens long
(min_new_tokens = max_new_tokens; the engine runs with no EOS ids and no stop strings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `langbridge` importable
    _repo = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(_repo), str(_repo / "src")]

import torch

from benchmarks.peer.legacy import write_legacy_copy, write_official_checkpoint
from benchmarks.peer.proc_memory import reset_peak_rss, rss_mb

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The official harness's MGSM context without an instruction template (lm_eval/tasks/mgsm.py, doc_to_text for a
# test document): the English question word, also for Swahili.
HARNESS_CONTEXT = "Question: {question}\nStep-by-Step Answer:"
LM_CHECK_TEXT = "Question: Janet's ducks lay 16 eggs per day. How many eggs does she sell?\nAnswer:"


# ---------------------------------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> None:
    from benchmarks.data import find_data_dir, mgsm_questions, text_sample
    from benchmarks.models import build_pair
    from langbridge import LangBridgeModel, LangBridgeProcessor

    assets = Path(args.assets)
    assets.mkdir(parents=True, exist_ok=True)
    data_dir, data_source = find_data_dir(args.data_dir)
    questions = mgsm_questions(data_dir, args.language, args.questions)
    if len(questions) < args.questions:
        raise SystemExit(f"only {len(questions)} {args.language} questions in {data_dir}")
    torch.manual_seed(args.seed)
    if args.checkpoint:
        model = LangBridgeModel.from_pretrained(args.checkpoint, dtype=torch.float32)
        base = LangBridgeProcessor.from_pretrained(args.checkpoint)
        weights, tokenizers = f"checkpoint {args.checkpoint}", "from the checkpoint"
    else:
        pair = build_pair(
            args.pair,
            texts=text_sample(data_dir, 500),
            random_weights=args.random_weights,
            device=torch.device("cpu"),
            dtype=torch.float32,
            processor_kwargs={},
            seed=args.seed,
        )
        model, base = pair.model, pair.processor
        weights = f"{pair.weights} (bridge: random, seed {args.seed})"
        tokenizers = pair.tokenizers
    lm_tok = base.lm_tokenizer
    if lm_tok.bos_token is None:
        raise SystemExit(
            "the LM tokenizer has no BOS token; the official harness feeds the BOS as the LM input"
        )
    # The official harness's layout: BOS, bridged states, enc_eos; no LM prompt.
    processor = LangBridgeProcessor(
        base.encoder_tokenizer,
        lm_tok,
        lm_prefix=lm_tok.bos_token,
        lm_prompt="",
        encoder_template="{text}",
        max_encoder_length=base.max_encoder_length,
        soft_token_id=model.config.soft_token_id,
    )
    model.save_pretrained(assets / "ours")
    processor.save_pretrained(assets / "ours")
    with tempfile.TemporaryDirectory() as tmp:
        # The encoder and LM folders as transformers 5 writes them, then their 4.37-readable copies.
        enc5, lm5 = Path(tmp) / "encoder", Path(tmp) / "lm"
        model.encoder.config.save_pretrained(enc5)
        base.encoder_tokenizer.save_pretrained(enc5)
        model.lm.save_pretrained(lm5)
        lm_tok.save_pretrained(lm5)
        enc_dir = write_legacy_copy(enc5, assets / "official" / "encoder")
        lm_dir = write_legacy_copy(lm5, assets / "official" / "lm")
        for f in lm5.glob("*.safetensors"):  # the LM's own weights, for the LM-alone logit check
            f.replace(lm_dir / f.name)
    write_official_checkpoint(model, assets / "official" / "checkpoint", enc_dir, lm_dir)
    texts = [HARNESS_CONTEXT.format(question=q) for q in questions]
    (assets / "questions.json").write_text(
        json.dumps(
            {
                "language": args.language,
                "data": f"{data_dir} ({data_source})",
                "questions": questions,
                "encoder_texts": texts,
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    (assets / "logit_check.json").write_text(
        json.dumps({"lm_text": LM_CHECK_TEXT, "question": texts[0]}, ensure_ascii=False), encoding="utf-8"
    )
    meta = {
        "pair": args.pair if not args.checkpoint else "checkpoint",
        "weights": weights,
        "tokenizers": tokenizers,
        "seed": args.seed,
        "data": data_source,
        "lm_prefix": processor.lm_prefix,
        "soft_token_id": processor.soft_token_id,
    }
    (assets / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    print(f"prepared {assets}: {meta}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from langbridge import LangBridgeModel, LangBridgeProcessor

    torch.set_num_threads(args.threads)
    assets = Path(args.assets)
    model = LangBridgeModel.from_pretrained(assets / "ours", dtype=DTYPES[args.dtype]).to(args.device).eval()
    processor = LangBridgeProcessor.from_pretrained(assets / "ours")
    texts = json.loads((assets / "questions.json").read_text(encoding="utf-8"))["encoder_texts"]
    return model, processor, texts[: args.questions] if args.questions else texts


def cmd_logits(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    assets = Path(args.assets)
    request = json.loads((assets / "logit_check.json").read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    with torch.no_grad():
        model, processor, _ = _load(args)
        # 1. The LM alone: our model's LM, our tokenizer.
        tok = processor.lm_tokenizer
        ids = tok(request["lm_text"], return_tensors="pt")["input_ids"]
        out["lm_input_ids"] = ids[0].tolist()
        out["lm_logits"] = model.lm(input_ids=ids.to(args.device)).logits[0].float().cpu()
        # 2. The whole LangBridge forward on one question (BOS, bridged states, enc_eos).
        batch = processor([request["question"]]).to(args.device)
        out["lb_enc_ids"] = batch["encoder_input_ids"][0].tolist()
        out["lb_logits"] = model(**batch).logits[0].float().cpu()
    torch.save(out, args.out)


def _measure(args: argparse.Namespace, system_mode: str, work: Any) -> None:
    model, processor, texts = _load(args)
    cuda = args.device.startswith("cuda")
    with torch.no_grad():
        work(model, processor, texts[:1], 2)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        load_peak = rss_mb("VmHWM")  # loading included; reset next, so the peak below is generation's
        reset = reset_peak_rss()
        start = time.perf_counter()
        tokens = work(model, processor, texts, args.new_tokens)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    n_tokens = sum(len(t) for t in tokens)
    result = {
        "system": "ours",
        "mode": system_mode,
        "batch_size": args.batch_size,
        "questions": len(texts),
        "new_tokens_requested": args.new_tokens,
        "new_tokens": [len(t) for t in tokens],
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds,
        "tokens": tokens,
        "texts": [processor.lm_tokenizer.decode(t, skip_special_tokens=True) for t in tokens],
        "peak_rss_mb": rss_mb("VmHWM") if reset else None,
        "peak_rss_process_mb": max(filter(None, [load_peak, rss_mb("VmHWM")]), default=None),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "meta": _meta(args),
    }
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    print(
        f"ours {system_mode}: {n_tokens} tokens in {seconds:.1f} s = {n_tokens / seconds:.2f} tokens/s",
        flush=True,
    )


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    return {
        "transformers": transformers.__version__,
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "device": args.device,
    }


def cmd_generate(args: argparse.Namespace) -> None:
    def work(model: Any, processor: Any, texts: list[str], n: int) -> list[list[int]]:
        tokens: list[list[int]] = []
        tok = processor.lm_tokenizer
        for i in range(0, len(texts), args.batch_size):
            batch = processor(texts[i : i + args.batch_size], padding_side="left").to(args.device)
            out = model.generate(
                **batch,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
            tokens += out[:, batch["input_ids"].shape[1] :].tolist()
        return tokens

    _measure(args, f"model.generate, batch {args.batch_size}", work)


def cmd_engine(args: argparse.Namespace) -> None:
    from langbridge.continuous_batching import continuous_greedy, prefill_batch

    def work(model: Any, processor: Any, texts: list[str], n: int) -> list[list[int]]:
        def prefill(idx: list[int]) -> Any:
            return prefill_batch(
                model, processor([texts[i] for i in idx], padding_side="left").to(args.device)
            )

        tokens: list[list[int]] = [[] for _ in texts]
        for i, ids in continuous_greedy(model, prefill, [n] * len(texts), args.batch_size, eos_ids=[]):
            tokens[i] = ids
        return tokens

    _measure(args, f"continuous batching (EOS and stop strings off), batch {args.batch_size}", work)


def cmd_eval(args: argparse.Namespace) -> None:
    """`langbridge eval` at its default settings (batch 8, continuous batching, the task's own prompt, stop
    strings and EOS) on the same questions with the same budget: not forced to the full budget, so the token
    count is what it generated (re-tokenized from the saved outputs)."""
    from langbridge.cli import main as cli_main
    from langbridge.processing import load_lm_tokenizer

    assets = Path(args.assets)
    meta = json.loads((assets / "questions.json").read_text(encoding="utf-8"))
    data_dir = meta["data"].rsplit(" (", 1)[0]
    n = args.questions or len(meta["questions"])
    with tempfile.TemporaryDirectory() as out_dir:
        argv = [
            "eval",
            str(assets / "ours"),
            "--tasks",
            "mgsm",
            "--languages",
            meta["language"],
            "--limit",
            str(n),
            "--max-new-tokens",
            str(args.new_tokens),
            "--data-dir",
            data_dir,
            "--output",
            out_dir,
            "--device",
            args.device,
            "--no-progress",
            "--offline",
            "--overwrite",
        ]
        torch.set_num_threads(args.threads)
        reset = reset_peak_rss()  # the model loads inside the command: this peak includes loading
        start = time.perf_counter()
        rc = cli_main(argv)
        seconds = time.perf_counter() - start
        if rc:
            raise SystemExit(f"langbridge eval exited {rc}")
        rows = [
            json.loads(line)
            for f in sorted(Path(out_dir).glob("predictions/*.jsonl"))
            for line in f.open(encoding="utf-8")
        ]
    tok = load_lm_tokenizer(str(assets / "ours" / "lm_tokenizer"))  # where a checkpoint keeps it
    outputs = [r.get("output", "") for r in rows]
    counts = [len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs]
    result = {
        "system": "ours",
        "mode": "langbridge eval (defaults: batch 8, continuous batching, stop strings + EOS), whole command",
        "batch_size": 8,
        "questions": len(rows),
        "new_tokens_requested": args.new_tokens,
        "new_tokens": counts,
        "seconds": seconds,
        "tokens_per_s": sum(counts) / seconds,
        "texts": outputs,
        "argv": argv,
        "peak_rss_mb": rss_mb("VmHWM") if reset else None,
        "peak_rss_process_mb": rss_mb("VmHWM"),
        "peak_gpu_mb": None,
        "meta": _meta(args),
    }
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    print(f"langbridge eval: {sum(counts)} tokens (re-tokenized) in {seconds:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("prepare", "logits", "generate", "engine", "eval"))
    p.add_argument("--assets", required=True)
    p.add_argument("--out")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--language", default="sw")
    p.add_argument("--data-dir")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--pair", choices=("default", "tiny"), default="default", help="tiny: for smoke tests")
    p.add_argument(
        "--checkpoint", help="a trained LangBridge checkpoint to compare with (default: a fresh model)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    {
        "prepare": cmd_prepare,
        "logits": cmd_logits,
        "generate": cmd_generate,
        "engine": cmd_engine,
        "eval": cmd_eval,
    }[args.command](args)


if __name__ == "__main__":
    main()
