"""Where a decoding step of the continuous-batching engine spends its time (a script, not a test).

    python benchmarks/decode_profile.py profile [--batch 8 32] [--context 160] [--steps 12] [--threads 1]
    python benchmarks/decode_profile.py compare [--batch 8 20] [--questions 20] [--new-tokens 64] [--threads 1]
    python benchmarks/decode_profile.py uneven  [--batch 8 20] [--questions 40] [--threads 1]
    ... compare|uneven --baseline OTHER/src/langbridge/continuous_batching.py   # also that version, interleaved
    python benchmarks/decode_profile.py joins --baseline OTHER/src/langbridge/continuous_batching.py

`profile`: the default pair (e5-small + smollm2-135m-instruct, untrained bridge: the compute per token is a trained
one's), `--batch` MGSM prompts prefilled through the evaluation backend and decoded to about `--context` cached
positions, then `--steps` engine decoding steps under torch.profiler. Every op's self time goes to one bucket:

  matmuls       q/k/v/o and MLP projections (aten::mm/addmm/bmm/linear outside the LM head and attention)
  attention     scaled_dot_product_attention and everything below it
  LM head       the vocabulary projection of the last position (and the argmax over it)
  cache/masks   KV-cache writes and reallocations, the attention-mask and position bookkeeping of the engine and of
                transformers' mask construction
  elementwise   the rest of the model: embeddings, RMSNorm, rotary, SiLU, residual adds, views
  Python        wall time of the step minus the ops' self times: interpreter, module calls, dispatch

Wall times per step are measured without the profiler, interleaved with the profiled steps.

`compare`: greedy decoding of `--questions` Swahili MGSM prompts at exactly `--new-tokens` tokens each (EOS off),
`LangBridgeModel.generate` (min_new_tokens) against the engine (`continuous_greedy` without EOS ids) at the same
batch sizes, alternating, with outputs checked equal. `uneven`: the same with each answer given its own budget from
a mix of MGSM answer lengths (20-128 tokens, fixed seed): `generate` runs each batch to its longest budget, the
engine refills freed rows; tokens/s counts only the budgeted tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LANGBRIDGE_SHARED", REPO.parent / "shared")) / "data" / "mgsm"


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def load_backend(batch: int):
    from langbridge import LangBridgeModel, LangBridgeProcessor
    from langbridge.evaluation import LangBridgeBackend
    from langbridge.pretrained import DEFAULT_ENCODER, DEFAULT_LM

    model = LangBridgeModel.from_encoder_and_lm(DEFAULT_ENCODER, DEFAULT_LM).eval()
    processor = LangBridgeProcessor.from_encoder_and_lm(DEFAULT_ENCODER, DEFAULT_LM)
    return LangBridgeBackend(model, processor, batch_size=batch)


def mgsm_requests(count: int, max_new_tokens: int, lang: str = "sw") -> list:
    from langbridge.evaluation import GenerationRequest

    path = SHARED / f"mgsm_{lang}.tsv"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    texts = [line.split("\t")[0] for line in lines] or ["Janet ana mayai 16. Anauza mayai 3 kila siku."]
    return [
        GenerationRequest(texts[i % len(texts)], texts[i % len(texts)], max_new_tokens=max_new_tokens)
        for i in range(count)
    ]


# ----------------------------------------------------------------------------------------------------------------
# profile


def _label(module, name: str) -> None:
    """Run `module`'s forward inside a profiler range called `name`."""
    import torch

    def pre(*_: Any) -> None:
        module._lb_range = torch.profiler.record_function(name)
        module._lb_range.__enter__()

    def post(*_: Any) -> None:
        module._lb_range.__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


@contextlib.contextmanager
def _labelled_functions():
    """Profiler ranges around the cache writes and transformers' mask construction."""
    import torch
    import transformers.masking_utils as masking
    import transformers.models.llama.modeling_llama as llama

    from langbridge import continuous_batching as cb

    patched = []

    def wrap(owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(name):
                return original(*args, **kwargs)

        setattr(owner, attr, wrapper)
        patched.append((owner, attr, original))

    for cls in {cb.GrowingLayer, *(getattr(cb, n) for n in ("PreallocatedLayer",) if hasattr(cb, n))}:
        wrap(cls, "update", "cache")
    wrap(masking, "create_causal_mask", "cache")
    if hasattr(llama, "create_causal_mask"):
        wrap(llama, "create_causal_mask", "cache")
    try:
        yield
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def _bucket(event, labels: list[str]) -> str:
    name = event.name
    if "lm_head" in labels or ("lm" not in labels and name in ("aten::argmax", "aten::max")):
        return "LM head"
    if "scaled_dot_product" in name or any("scaled_dot_product" in x for x in labels):
        return "attention"
    if "cache" in labels:
        return "cache/masks"
    if "lm" not in labels:  # the engine around the LM call: mask, positions, token ids, soft-token embedding
        return "elementwise" if name in ("aten::embedding", "aten::index_select") else "cache/masks"
    if name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"):
        return "matmuls"
    return "elementwise"


def _breakdown(prof, steps: int) -> dict[str, float]:
    """Per-step milliseconds of each bucket from the ops' self times."""
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith("##") or not event.name.startswith("aten::"):
            continue
        labels, parent = [], event.cpu_parent
        while parent is not None:
            labels.append(parent.name)
            parent = parent.cpu_parent
        bucket = _bucket(event, labels)
        totals[bucket] = totals.get(bucket, 0.0) + event.self_cpu_time_total / 1000 / steps
    return totals


def profile(args: argparse.Namespace) -> list[dict]:
    import torch

    from langbridge.continuous_batching import DecodeBatch

    results = []
    for batch in args.batch:
        backend = load_backend(batch)
        model = backend.model
        _label(model.lm, "lm")
        _label(model.lm.lm_head, "lm_head")
        requests = mgsm_requests(batch, 256)
        with torch.inference_mode():
            logits, cache, mask = backend._prefill(requests)
            running = DecodeBatch(batch)
            running.add(list(range(batch)), cache, mask)
            last = logits.argmax(-1).tolist()

            def step(running=running, model=model, last=last) -> None:
                with torch.profiler.record_function("engine"):
                    tokens = torch.tensor(last)
                    last[:] = (
                        running.step(model, tokens).argmax(-1).tolist()
                    )  # read on the host, as the engine

            while running.mask.shape[1] < args.context:
                step()
            plain, profiled = [], []
            with _labelled_functions():
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    step()
                    plain.append(time.perf_counter() - t0)
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for _ in range(args.steps):
                        t0 = time.perf_counter()
                        step()
                        profiled.append(time.perf_counter() - t0)
            for _ in range(args.steps):  # wall time again, without the profiler's ranges
                t0 = time.perf_counter()
                step()
                plain.append(time.perf_counter() - t0)
        ops = _breakdown(prof, args.steps)
        profiled_ms = statistics.mean(profiled) * 1000
        ops["Python"] = max(0.0, profiled_ms - sum(ops.values()))
        order = ["matmuls", "attention", "LM head", "cache/masks", "elementwise", "Python"]
        result = {
            "batch": batch,
            "context": int(running.mask.shape[1]),
            "threads": torch.get_num_threads(),
            "step_ms_median": round(statistics.median(plain) * 1000, 1),
            "step_ms_min": round(min(plain) * 1000, 1),
            "profiled_step_ms": round(profiled_ms, 1),
            "ms": {k: round(ops.get(k, 0.0), 2) for k in order},
            "share": {k: round(100 * ops.get(k, 0.0) / profiled_ms, 1) for k in order},
        }
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.table:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        del backend, model, cache, running
    print("\n| batch | context | step ms (median, unprofiled) | " + " | ".join(order) + " |")
    print("|---|---|---|" + "---|" * len(order))
    for r in results:
        cells = " | ".join(f"{r['ms'][k]:.1f} ({r['share'][k]:.0f}%)" for k in order)
        print(f"| {r['batch']} | {r['context']} | {r['step_ms_median']} | {cells} |")
    return results


# ----------------------------------------------------------------------------------------------------------------
# compare / uneven: the engine against `generate` at the same batch size


def _run_generate(backend, requests: list, budgets: list[int], batch: int) -> tuple[float, list]:
    import torch
    from transformers import GenerationConfig

    model, proc = backend.model, backend.processor
    outputs: list = [None] * len(requests)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(requests), batch):
            idx = list(range(start, min(start + batch, len(requests))))
            enc = backend._inputs([requests[i] for i in idx])
            longest = max(budgets[i] for i in idx)
            # EOS suppressed until the budget (None would take the LM's EOS ids from its generation config).
            config = GenerationConfig(
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=proc.lm_tokenizer.pad_token_id,
            )
            ids = model.generate(**enc, generation_config=config)
            width = enc["input_ids"].shape[1]
            for row, i in enumerate(idx):
                outputs[i] = ids[row, width : width + budgets[i]].tolist()
    return time.perf_counter() - t0, outputs


def _load_baseline(path: str):
    """Another version of continuous_batching.py (e.g. main's), loaded as its own module for an A/B run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_continuous_batching", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run_engine(
    backend, requests: list, budgets: list[int], batch: int, module: Any = None
) -> tuple[float, list]:
    import torch

    if module is None:
        from langbridge import continuous_batching as module
    continuous_greedy = module.continuous_greedy

    outputs: list = [None] * len(requests)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i, ids in continuous_greedy(
            backend.model, lambda idx: backend._prefill([requests[i] for i in idx]), budgets, batch, []
        ):
            outputs[i] = ids
    return time.perf_counter() - t0, outputs


def _until_eos(outputs: list[list[int]], eos: set[int]) -> list[list[int]]:
    """`generate` suppresses EOS until the budget (min_new_tokens), the engine runs without EOS ids: the answers
    agree up to the first EOS the engine picks."""
    return [ids[: next((k for k, t in enumerate(ids) if t in eos), len(ids))] for ids in outputs]


def compare(args: argparse.Namespace, uneven: bool) -> list[dict]:
    backend = load_backend(max(args.batch))
    if uneven:
        rng = random.Random(0)
        # MGSM-like answer lengths: most answers end well before the 128-token budget, a few run to it.
        budgets = [min(128, max(20, int(rng.lognormvariate(4.0, 0.45)))) for _ in range(args.questions)]
    else:
        budgets = [args.new_tokens] * args.questions
    requests = mgsm_requests(args.questions, max(budgets))
    tokens = sum(budgets)
    eos = set(backend._eos)
    baseline = _load_baseline(args.baseline) if args.baseline else None
    _run_engine(backend, requests[:2], [4, 4], 2)  # warm-up
    systems = ["generate", "engine"] + (["baseline"] if baseline else [])
    rows = []
    for batch in args.batch:
        times: dict[str, list[float]] = {name: [] for name in systems}
        same = True
        for r in range(args.repeats):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            outs = {}
            for name in order:
                if name == "generate":
                    dt, outs[name] = _run_generate(backend, requests, budgets, batch)
                else:
                    module = baseline if name == "baseline" else None
                    dt, outs[name] = _run_engine(backend, requests, budgets, batch, module)
                times[name].append(dt)
            same &= all(_until_eos(outs[n], eos) == _until_eos(outs["engine"], eos) for n in systems)
        row = {
            "mode": "uneven" if uneven else f"forced {args.new_tokens}",
            "batch": batch,
            "questions": args.questions,
            "tokens": tokens,
            "generate_tok_s": [round(tokens / t, 2) for t in times["generate"]],
            "engine_tok_s": [round(tokens / t, 2) for t in times["engine"]],
            "engine_over_generate": [
                round(g / e, 3) for g, e in zip(times["generate"], times["engine"], strict=True)
            ],
            **(
                {
                    "baseline_tok_s": [round(tokens / t, 2) for t in times["baseline"]],
                    "engine_over_baseline": [
                        round(b / e, 3) for b, e in zip(times["baseline"], times["engine"], strict=True)
                    ],
                }
                if baseline
                else {}
            ),
            "outputs_equal_until_eos": same,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def joins(args: argparse.Namespace) -> list[dict]:
    """Cost of one row leaving and one prefilled row joining a running batch (the prefill itself excluded): this
    checkout's DecodeBatch (remove + add into the freed slot) against `--baseline`'s `_select` + `_join` (copies of
    the whole cache), interleaved, plus the decoding step after each."""
    import torch

    from langbridge.continuous_batching import DecodeBatch

    if not args.baseline:
        raise SystemExit("joins needs --baseline OTHER/src/langbridge/continuous_batching.py")
    old = _load_baseline(args.baseline)
    results = []
    for batch in args.batch:
        backend = load_backend(batch)
        model = backend.model
        requests = mgsm_requests(batch + 1, 64)
        times: dict[str, list[float]] = {
            "old_leave_join": [],
            "new_leave_join": [],
            "old_step": [],
            "new_step": [],
        }
        with torch.inference_mode():
            logits, cache, mask = backend._prefill(requests[:batch])
            running = DecodeBatch(batch)
            running.add(list(range(batch)), cache, mask)
            tokens = torch.tensor(logits.argmax(-1).tolist())
            for _ in range(args.context - mask.shape[1] if args.context > mask.shape[1] else 0):
                tokens = running.step(model, tokens).argmax(-1)
            _, one_cache, one_mask = backend._prefill(requests[batch:])  # the joining row (short prompt)
            # The same rows as the baseline's cache format: a plain DynamicCache of contiguous tensors.
            old_cache = old.growing_cache(
                [(layer.keys.contiguous(), layer.values.contiguous()) for layer in running.cache.layers]
            )
            old_mask = running.mask.clone()
            for r in range(args.repeats * 2):
                for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    t0 = time.perf_counter()
                    if name == "old":
                        c, m = old._select(old_cache, old_mask, list(range(1, batch)))
                        c, m = old._join(c, m, one_cache, one_mask)
                    else:
                        running.remove([r % batch])
                        running.add([batch + r], one_cache, one_mask)
                    times[f"{name}_leave_join"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    if name == "old":
                        m = torch.cat([m, m.new_ones(batch, 1)], dim=1)
                        old.forward_next_token_logits(model, tokens.unsqueeze(1), m, c)
                    else:
                        saved = [(layer.rows, layer.filled) for layer in running.cache.layers]
                        saved_mask = running.mask
                        running.step(model, tokens)
                        for layer, (rows, filled) in zip(running.cache.layers, saved, strict=True):
                            layer.set_view(rows, filled)  # undo the step: the next round joins the same width
                        running.mask = saved_mask
                    times[f"{name}_step"].append(time.perf_counter() - t0)
        result = {
            "batch": batch,
            "context": int(old_mask.shape[1]),
            **{k: [round(1000 * t, 1) for t in v] for k, v in times.items()},
            "leave_join_old_over_new": round(
                statistics.median(times["old_leave_join"]) / statistics.median(times["new_leave_join"]), 2
            ),
            "step_old_over_new": round(
                statistics.median(times["old_step"]) / statistics.median(times["new_step"]), 3
            ),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["profile", "compare", "uneven", "joins"])
    parser.add_argument("--batch", type=int, nargs="+", default=None)
    parser.add_argument(
        "--context", type=int, default=160, help="profile: cached positions when timing starts"
    )
    parser.add_argument("--steps", type=int, default=12, help="profile: steps timed and profiled")
    parser.add_argument("--questions", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="compare: alternating repeats of each system")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--baseline",
        default=None,
        help="compare/uneven: also run this continuous_batching.py (e.g. main's) as 'baseline', interleaved",
    )
    parser.add_argument("--table", action="store_true", help="profile: also print torch.profiler's op table")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    _threads(args.threads)
    if args.what == "profile":
        args.batch = args.batch or [8, 32]
        results = profile(args)
    elif args.what == "joins":
        args.batch = args.batch or [8, 32]
        results = joins(args)
    else:
        args.batch = args.batch or [8, 20]
        args.questions = args.questions or (40 if args.what == "uneven" else 20)
        results = compare(args, uneven=args.what == "uneven")
    if args.output:
        Path(args.output).write_text(json.dumps({"what": args.what, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
