"""The benchmark phases: training throughput + MFU, generation tokens/s, MGSM evaluation wall time, scaling.

Every phase runs ours and the official-approach reference (benchmarks/reference.py) back to back in the same
process, so the ratios hold even when the absolute speed of a shared machine drifts.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import StoppingCriteria, StoppingCriteriaList

from langbridge.continuous_batching import eos_token_ids
from langbridge.evaluation import evaluate
from langbridge.evaluation.backends import LangBridgeBackend
from langbridge.evaluation.runner import read_predictions
from langbridge.training.batching import BatchIterator, Collator, EpochBatchSampler
from langbridge.training.data import build_data
from langbridge.training.recipe import compile_layers, set_train_mode

from .common import PeakMemory, autocast, measure_machine_peak, measure_matmul_peak, sync, timed
from .flops import batch_lengths, train_shape, training_flops
from .reference import OfficialReference, ReferenceBackend

logger = logging.getLogger("benchmarks")
# What `langbridge train` passes: the LM head and loss only where targets are.
TARGET_LOGITS = {"logits_to_keep": "targets"}
PEAK_PROBE_SECONDS = 0.5  # the matmul probe around each timed training step


@dataclass
class Options:
    device: torch.device
    dtype: torch.dtype  # compute dtype: fp32, or bf16 autocast on GPU
    train_steps: int = 4
    warmup_steps: int = 1
    train_batch: int = 8
    repeats: int = 2
    gen_batches: tuple[int, ...] = (1, 8, 32)
    gen_tokens: int = 32
    reference_gen_examples: int = 4
    eval_languages: tuple[str, ...] = ("en", "zh", "sw", "bn")
    eval_questions: int = 100
    eval_max_new_tokens: int = 128
    eval_batch: int = 32
    reference: bool = True
    scaling_batches: tuple[int, ...] = (1, 2, 4, 8)
    scaling_lengths: tuple[int, ...] = (128, 256, 512)
    scaling_collate: tuple[int, ...] = (8, 32, 128)
    scaling_contexts: tuple[int, ...] = (128, 512, 1024)
    scaling_decode_steps: int = 16
    train_overrides: list[str] = field(default_factory=list)
    # Train on examples of at least this many encoder + LM tokens (the "length >= 256" setting).
    min_example_length: int = 256


# ----------------------------------------------------------------------------------------------------------------
# Training
def _train_loop(
    step_fn: Any,
    batches: Any,
    lengths_fn: Any,
    params: list,
    opt: Any,
    opts: Options,
    shape: Any,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Times whole optimizer steps (data loading, collation and padding included). A short matmul peak probe before
    the first timed step and after each one (outside the timing) gives every step the peak of the moment it ran in:
    this machine's speed drifts within minutes, so one peak per run can be far from the one a step saw."""
    dev = opts.device

    def probe() -> float:
        return measure_matmul_peak(dev, opts.dtype, seconds=PEAK_PROBE_SECONDS)["peak_flops"]

    last_probe = None
    totals = {"data_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0}
    tokens = targets = enc_tokens = examples = 0
    flops = cpu_seconds = 0.0
    padded = lm_padded = lm_real = 0
    per_step = []
    with PeakMemory(dev) as mem:
        for i in range(opts.warmup_steps + opts.train_steps):
            if i == opts.warmup_steps:
                last_probe = probe()
            sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            batch = next(batches)
            t1 = time.perf_counter()
            enc, lm, tg = lengths_fn(batch)
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            with autocast(dev, opts.dtype if amp_dtype is None else amp_dtype):
                loss = step_fn(batch)
            sync(dev)
            t2 = time.perf_counter()
            loss.backward()
            sync(dev)
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(dev)
            t4, c4 = time.perf_counter(), time.process_time()
            if i < opts.warmup_steps:
                continue
            cpu_seconds += c4 - c0
            totals["data_s"] += t1 - t0
            totals["forward_s"] += t2 - t1
            totals["backward_s"] += t3 - t2
            totals["optimizer_s"] += t4 - t3
            n = sum(enc) + sum(lm)
            tokens += n
            enc_tokens += sum(enc)
            examples += len(enc)
            targets += sum(tg)
            padded += _padded_tokens(batch)
            lm_padded += _lm_slots(batch)
            lm_real += sum(lm)
            step_flops = training_flops(shape, enc, lm, tg)
            flops += step_flops
            before, last_probe = last_probe, probe()
            per_step.append(
                {
                    "seconds": round(t4 - t0, 4),
                    "tokens": n,
                    "flops": step_flops,
                    "loss": float(loss.detach()),
                    # The higher of the two probes around the step: the conservative denominator.
                    "peak_flops": max(before, last_probe),
                }
            )
    seconds = sum(totals.values())
    return {
        "steps": opts.train_steps,
        "seconds": seconds,
        "tokens": tokens,
        "target_tokens": targets,
        "tokens_per_s": tokens / seconds,
        "mean_example_length": tokens / examples,
        "mean_encoder_length": enc_tokens / examples,
        "mean_target_length": targets / examples,
        "padding_fraction": 1 - tokens / padded if padded else 0.0,
        "lm_padding_fraction": 1 - lm_real / lm_padded if lm_padded else 0.0,
        "flops": flops,
        "achieved_flops": flops / seconds,
        # Work done / work the probed peak would have done in the same seconds.
        "probed_peak_work": sum(st["seconds"] * st["peak_flops"] for st in per_step),
        "cpu_seconds": cpu_seconds,
        "breakdown_s": {k: round(v, 3) for k, v in totals.items()},
        "per_step": per_step,
        **mem.as_dict(),
    }


def _padded_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Token slots the model actually processed (encoder + LM, padding included)."""
    if "encoder_input_ids" in batch:
        return batch["encoder_input_ids"].numel() + batch["input_ids"].numel()
    return batch["enc_ids"].numel() + _lm_slots(batch)


def example_lengths(data: Any, processor: Any, chunk: int = 256) -> list[int]:
    """Encoder + LM tokens of every training example, as the collator lays them out."""
    collator = Collator(processor, append_eos=data.append_eos)
    total = []
    for start in range(0, len(data.train), chunk):
        batch = collator([data.train[i] for i in range(start, min(start + chunk, len(data.train)))])
        total += (batch["encoder_attention_mask"].sum(1) + batch["attention_mask"].sum(1)).tolist()
    return total


def load_training_data(processor: Any, cfg: Any, opts: Options) -> Any:
    """The recipe's data (build_data), restricted to examples of at least `min_example_length` tokens."""
    data = build_data(cfg.data, processor, cfg.seed)
    if opts.min_example_length > 1:
        lengths = example_lengths(data, processor)
        kept = [i for i in data.train_indices if lengths[i] >= opts.min_example_length]
        if len(kept) < cfg.batch_size * (opts.warmup_steps + opts.train_steps):
            raise ValueError(
                f"Only {len(kept)} training examples have >= {opts.min_example_length} tokens; lower the limit."
            )
        data.train_indices = kept
    return data


def _lm_slots(batch: dict[str, torch.Tensor]) -> int:
    """Positions the LM processed (the costly part), padding and official-layout holes included."""
    if "encoder_input_ids" in batch:
        return batch["input_ids"].numel()
    # Official layout: prefix + every encoder slot (holes included) + end-of-encoder + the right-padded LM text.
    enc = batch["enc_ids"]
    return batch["input_ids"].numel() + enc.shape[0] * (int(batch["prefix_len"]) + enc.shape[1] + 1)


def train_ours(model: Any, processor: Any, cfg: Any, opts: Options) -> dict[str, Any]:
    """The recipe's training step (its data loader with token-length grouping, collator, AdamW, clipping, the LM head
    only at targets) over `train_steps` steps."""
    data = load_training_data(processor, cfg, opts)
    collator = Collator(processor, append_eos=data.append_eos)
    stream = BatchIterator(data, cfg, collator, 0, 1)(0, 0)
    batches = (batch for _, _, batch in stream)
    set_train_mode(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr_bridge, fused=opts.device.type == "cuda")
    try:
        return _train_loop(
            lambda b: model(**b, **TARGET_LOGITS).loss,
            batches,
            batch_lengths,
            params,
            opt,
            opts,
            train_shape(model),
        )
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def train_reference(model: Any, processor: Any, cfg: Any, opts: Options) -> dict[str, Any]:
    ref = OfficialReference(model, processor)
    data = load_training_data(processor, cfg, opts)
    assert data.train is not None
    # The official DataLoader: shuffle=True, no length grouping.
    sampler = EpochBatchSampler(
        data.train_indices, [0] * len(data.train), cfg.batch_size, cfg.seed, 0, group_by_length=False
    )
    loader = DataLoader(
        data.train, batch_sampler=sampler, collate_fn=lambda ex: ref.collate(ex, data.append_eos)
    )
    set_train_mode(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr_bridge)
    try:
        return _train_loop(
            lambda b: ref.loss(b)[0],
            iter(loader),
            ref.real_lengths,
            params,
            opt,
            opts,
            train_shape(model),
            amp_dtype=torch.float32,  # the reference is full precision throughout
        )
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def bare_step(
    model: Any, processor: Any, run: dict[str, Any], opts: Options, reps: int = 2
) -> dict[str, Any]:
    """Forward + backward alone on an unpadded synthetic batch shaped like the run's mean example: the ceiling the
    end-to-end number is compared with (what data loading, padding and Python overhead cost)."""
    enc_len = max(1, round(run["mean_encoder_length"]))
    target_len = max(1, round(run["mean_target_length"]))
    prefix = (
        len(processor.lm_tokenizer(processor.lm_prefix, add_special_tokens=False)["input_ids"])
        if processor.lm_prefix
        else 0
    )
    gen = torch.Generator().manual_seed(0)
    batch = _synthetic_batch(processor, model, opts.train_batch, enc_len, target_len, gen)
    # Stretch the targets' share so the example length matches the run's mean (the prompt counts as LM text).
    extra = round(run["mean_example_length"]) - enc_len - (prefix + enc_len + 1 + target_len)
    if extra > 0:
        batch = _synthetic_batch(processor, model, opts.train_batch, enc_len, target_len + extra, gen)
        batch["labels"][:, -(target_len + extra) : -target_len] = -100
    batch = {k: v.to(opts.device) for k, v in batch.items()}
    enc, lm, tg = batch_lengths(batch)
    set_train_mode(model)
    best = float("inf")
    try:
        for _ in range(reps):
            sync(opts.device)
            t0 = time.perf_counter()
            with autocast(opts.device, opts.dtype):
                loss = model(**batch, **TARGET_LOGITS).loss
            loss.backward()
            sync(opts.device)
            best = min(best, time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
    finally:
        model.eval()
    flops = training_flops(train_shape(model), enc, lm, tg)
    return {"seconds": best, "tokens_per_s": (sum(enc) + sum(lm)) / best, "achieved_flops": flops / best}


def training_phase(pair: Any, ref_model: Any, cfg: Any, opts: Options) -> dict[str, Any]:
    """Ours and the reference alternately, `repeats` times each, with the matmul peak measured before each."""
    runs: dict[str, list] = {"ours": [], "reference": []}
    peaks = []
    # model.compile=true (--train-override): our step and its bare ceiling run compiled; the warm-up step compiles.
    compiled = compile_layers(pair.model) if cfg.model.compile else []
    try:
        for _ in range(opts.repeats):
            peak = measure_machine_peak(opts.device, opts.dtype)
            peaks.append(peak)
            runs["ours"].append(train_ours(pair.model, pair.processor, cfg, opts) | {"peak": peak})
            runs["ours"][-1]["bare"] = bare_step(pair.model, pair.processor, runs["ours"][-1], opts)
            if opts.reference:
                runs["reference"].append(
                    train_reference(ref_model, pair.processor, cfg, opts) | {"peak": peak}
                )
    finally:
        if compiled:
            for layer in compiled:
                layer._compiled_call_impl = None  # generation and evaluation are timed eager
            # All layer classes share transformers' checkpointing wrapper, so compiled variants of one model would
            # count against dynamo's recompile limit for the next model of the run.
            torch._dynamo.reset()

    peak = max(p["peak_flops"] for p in peaks)
    out: dict[str, Any] = {
        "compiled": bool(compiled),
        "peak": {"peak_flops": peak, "measurements": peaks},
        "shape": train_shape(pair.model).as_dict(),
    }
    for name, rs in runs.items():
        if not rs:
            continue
        seconds = sum(r["seconds"] for r in rs)
        tokens = sum(r["tokens"] for r in rs)
        flops = sum(r["flops"] for r in rs)
        out[name] = {
            "tokens_per_s": tokens / seconds,
            "achieved_flops": flops / seconds,
            "mfu": flops / seconds / peak,
            "mfu_per_run": [r["achieved_flops"] / r["peak"]["peak_flops"] for r in rs],
            # Each step against the peak probed around it (robust to the machine's drift between steps and runs).
            "mfu_step_peaks": flops / sum(r["probed_peak_work"] for r in rs),
            "mfu_cpu_time": flops
            / sum(r["cpu_seconds"] for r in rs)
            / max(p["peak_flops_per_cpu_s"] for p in peaks),
            "padding_fraction": sum(r["padding_fraction"] for r in rs) / len(rs),
            "lm_padding_fraction": sum(r["lm_padding_fraction"] for r in rs) / len(rs),
            "mean_example_length": sum(r["mean_example_length"] for r in rs) / len(rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "runs": rs,
        }
        if name == "ours":
            bare = [r["bare"]["achieved_flops"] for r in rs]
            out[name]["bare_forward_backward_mfu"] = max(bare) / peak
        if "peak_gpu_mb" in rs[0]:
            out[name]["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in rs)
    if runs["reference"]:
        out["speedup_tokens_per_s"] = out["ours"]["tokens_per_s"] / out["reference"]["tokens_per_s"]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Generation
class StepTimer(StoppingCriteria):
    """Never stops generation; records the clock after every generated token (the first one = encoder + prefill)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        sync(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _split_times(start: float, times: list[float], batch: int) -> dict[str, Any]:
    """Prefill (start -> first token) and decode (later tokens, KV cache) from per-token clock readings."""
    out: dict[str, Any] = {"prefill_s": times[0] - start}
    if len(times) > 1:
        decode = times[-1] - times[0]
        out["decode_s"] = decode
        out["decode_tokens_per_s"] = batch * (len(times) - 1) / decode
        steps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
        out["median_step_ms"] = 1000 * steps[len(steps) // 2]
    return out


@torch.no_grad()
def generation_phase(pair: Any, ref_model: Any, questions: list[str], opts: Options) -> dict[str, Any]:
    """Greedy generation of exactly `gen_tokens` new tokens per example (EOS suppressed so every batch does the same
    work), with the KV cache; tokens/s counts generated tokens over the whole call (encoder and prefill included)."""
    model, proc, dev = pair.model, pair.processor, opts.device
    pad = proc.lm_tokenizer.pad_token_id
    n = opts.gen_tokens

    def run(texts: list[str], new_tokens: int, timer: StepTimer | None = None) -> None:
        batch = proc(texts, padding_side="left").to(dev)
        with autocast(dev, opts.dtype):
            model.generate(
                **batch,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
                stopping_criteria=StoppingCriteriaList([timer] if timer is not None else []),
            )

    def texts_for(b: int) -> list[str]:
        return [questions[i % len(questions)] for i in range(b)]

    run(texts_for(2), 2)  # warm-up
    out: dict[str, Any] = {"new_tokens": n, "ours": {}}
    for b in opts.gen_batches:
        timer = StepTimer(dev)
        with PeakMemory(dev) as mem:
            start = time.perf_counter()
            _, seconds, cpu = timed(lambda b=b, timer=timer: run(texts_for(b), n, timer), dev)
        out["ours"][str(b)] = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "tokens_per_s": b * n / seconds,
            **_split_times(start, timer.times, b),
            **mem.as_dict(),
        }
    first = str(opts.gen_batches[0])
    out["batch_scaling"] = {
        b: out["ours"][b]["tokens_per_s"] / out["ours"][first]["tokens_per_s"] for b in out["ours"]
    }
    if all("decode_tokens_per_s" in r for r in out["ours"].values()):
        out["decode_batch_scaling"] = {
            b: r["decode_tokens_per_s"] / out["ours"][first]["decode_tokens_per_s"]
            for b, r in out["ours"].items()
        }
    if opts.reference:
        ref = OfficialReference(ref_model, proc)
        eos = eos_token_ids(model, proc.lm_tokenizer)
        k = opts.reference_gen_examples
        ref.generate_one(questions[0], proc.lm_prompt, 2, eos, min_new_tokens=2)  # warm-up
        splits = []

        def run_reference() -> None:
            for t in texts_for(k):
                times: list[float] = []
                start = time.perf_counter()
                ref.generate_one(t, proc.lm_prompt, n, eos, min_new_tokens=n, step_times=times)
                splits.append(_split_times(start, times, 1))

        with PeakMemory(dev) as mem:
            _, seconds, cpu = timed(run_reference, dev)
        out["reference"] = {
            "examples": k,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "tokens_per_s": k * n / seconds,
            "prefill_s": sum(x["prefill_s"] for x in splits) / k,
            **mem.as_dict(),
        }
        if n > 1:
            decode = sum(x["decode_s"] for x in splits)
            out["reference"]["decode_tokens_per_s"] = k * (n - 1) / decode
        out["speedup_vs_reference"] = {
            b: r["tokens_per_s"] / out["reference"]["tokens_per_s"] for b, r in out["ours"].items()
        }
        if "decode_tokens_per_s" in out["reference"]:
            out["decode_speedup_vs_reference"] = {
                b: r["decode_tokens_per_s"] / out["reference"]["decode_tokens_per_s"]
                for b, r in out["ours"].items()
                if "decode_tokens_per_s" in r
            }
    return out


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
def evaluation_phase(pair: Any, ref_model: Any, data_dir: Path, opts: Options) -> dict[str, Any]:
    """MGSM through the evaluation package's runner: `eval_questions` questions split evenly over the languages,
    greedy, at most `eval_max_new_tokens` new tokens each (EOS ends an answer early, as in a real run)."""
    langs = list(opts.eval_languages)
    per_lang = max(1, opts.eval_questions // len(langs))
    out: dict[str, Any] = {
        "questions": per_lang * len(langs),
        "languages": langs,
        "max_new_tokens": opts.eval_max_new_tokens,
        "batch_size": opts.eval_batch,
    }
    backends = [
        ("ours", LangBridgeBackend(pair.model, pair.processor, batch_size=opts.eval_batch, name="bench"))
    ]
    if opts.reference:
        backends.append(
            (
                "reference",
                ReferenceBackend(ref_model, pair.processor, batch_size=opts.eval_batch, name="bench"),
            )
        )
    predictions = {}
    for name, backend in backends:
        with tempfile.TemporaryDirectory(prefix="langbridge-bench-eval-") as tmp:
            with PeakMemory(opts.device) as mem:
                result, seconds, cpu = timed(
                    lambda backend=backend, tmp=tmp: evaluate(
                        backend,
                        "mgsm",
                        languages=langs,
                        limit=per_lang,
                        batch_size=opts.eval_batch,
                        output_dir=tmp,
                        data_dir=data_dir,
                        max_new_tokens=opts.eval_max_new_tokens,
                        progress=False,
                        allow_hub=False,
                    ),
                    opts.device,
                )
            rows = read_predictions(Path(tmp) / "predictions" / "mgsm.jsonl")
        predictions[name] = {k: r["output"] for k, r in rows.items()}
        new_tokens = sum(
            len(pair.processor.lm_tokenizer(o, add_special_tokens=False)["input_ids"])
            for o in predictions[name].values()
        )
        out[name] = {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "questions_per_s": out["questions"] / seconds,
            "output_tokens": new_tokens,
            "accuracy": result["tasks"]["mgsm"]["summary"]["AVG"],
            **mem.as_dict(),
        }
    if opts.reference:
        out["speedup_vs_reference"] = out["reference"]["seconds"] / out["ours"]["seconds"]
        out["speedup_vs_reference_cpu_time"] = out["reference"]["cpu_seconds"] / out["ours"]["cpu_seconds"]
        same = sum(predictions["ours"][k] == predictions["reference"].get(k) for k in predictions["ours"])
        out["identical_outputs"] = same / len(predictions["ours"])
    return out


# ----------------------------------------------------------------------------------------------------------------
# Scaling
def _synthetic_batch(
    proc: Any, model: Any, batch: int, enc_len: int, target_len: int, gen: torch.Generator
) -> dict:
    """An unpadded training batch of exactly these lengths (random token ids), laid out like the processor's."""
    enc_vocab = model.encoder.get_input_embeddings().num_embeddings
    lm_vocab = min(len(proc.lm_tokenizer), model.lm.get_input_embeddings().num_embeddings)
    prefix = (
        proc.lm_tokenizer(proc.lm_prefix, add_special_tokens=False)["input_ids"] if proc.lm_prefix else []
    )
    enc = torch.randint(5, enc_vocab, (batch, enc_len), generator=gen)
    slots = torch.full((batch, enc_len + 1), proc.soft_token_id)
    target = torch.randint(5, lm_vocab, (batch, target_len), generator=gen)
    target[target == proc.soft_token_id] = 5
    head = torch.cat([torch.tensor(prefix, dtype=torch.long).expand(batch, -1), slots], dim=1)
    ids = torch.cat([head, target], dim=1)
    labels = torch.cat([torch.full_like(head, -100), target], dim=1)
    return {
        "encoder_input_ids": enc,
        "encoder_attention_mask": torch.ones_like(enc),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
    }


def scaling_phase(pair: Any, cfg: Any, opts: Options, reps: int = 2) -> dict[str, Any]:
    """How cost grows, next to what the FLOP model predicts for the same inputs:
    - training forward+backward on unpadded batches, per token, over batch size (fixed length) and over length
      (batch 1): flat in batch; in length only as fast as the attention term (the one quadratic part);
    - collation (tokenize + lay out + pad, the training data path), per token, over the number of examples: flat;
    - greedy decoding with the KV cache, per new token, over the context length (batch 1): each step attends over
      the whole context, so per-token cost grows linearly with it (and a whole generation quadratically)."""
    model, proc, dev = pair.model, pair.processor, opts.device
    shape = train_shape(model)
    gen = torch.Generator().manual_seed(0)
    peak = measure_machine_peak(dev, opts.dtype)["peak_flops"]
    set_train_mode(model)

    def measure(b: int, length: int) -> dict[str, Any]:
        enc_len, target_len = length // 3, length - 2 * (length // 3)
        batch = {k: v.to(dev) for k, v in _synthetic_batch(proc, model, b, enc_len, target_len, gen).items()}
        enc, lm, tg = batch_lengths(batch)
        best = float("inf")
        for _ in range(reps):
            sync(dev)
            t0 = time.perf_counter()
            with autocast(dev, opts.dtype):
                loss = model(**batch, **TARGET_LOGITS).loss
            loss.backward()
            sync(dev)
            best = min(best, time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        tokens = sum(enc) + sum(lm)
        flops = training_flops(shape, enc, lm, tg)
        return {
            "batch": b,
            "tokens_per_example": tokens // b,
            "seconds": best,
            "us_per_token": 1e6 * best / tokens,
            "flops_per_token": flops / tokens,
            "mfu": flops / best / peak,
        }

    base_len = opts.scaling_lengths[0]
    over_batch = [measure(b, base_len) for b in opts.scaling_batches]
    over_length = [measure(1, n) for n in opts.scaling_lengths]
    model.eval()

    # Collation of real training examples.
    data = build_data(cfg.data, proc, cfg.seed)
    examples = [data.train[i] for i in range(min(len(data.train), max(opts.scaling_collate)))]
    collator = Collator(proc, append_eos=data.append_eos)
    collate_rows = []
    for n in opts.scaling_collate:
        chunk = [examples[i % len(examples)] for i in range(n)]
        collator(chunk[:2])  # warm-up
        _, seconds, _ = timed(lambda chunk=chunk: collator(chunk), torch.device("cpu"))
        batch = collator(chunk)
        tokens = int(batch["attention_mask"].sum() + batch["encoder_attention_mask"].sum())
        collate_rows.append(
            {
                "examples": n,
                "seconds": seconds,
                "us_per_token": 1e6 * seconds / tokens,
                "flops_per_token": 1.0,
            }
        )

    # Decoding over context length.
    decode_rows = []
    steps = opts.scaling_decode_steps
    prefix = (
        proc.lm_tokenizer(proc.lm_prefix, add_special_tokens=False)["input_ids"] if proc.lm_prefix else []
    )
    lm_vocab = min(len(proc.lm_tokenizer), model.lm.get_input_embeddings().num_embeddings)
    with torch.no_grad():
        for ctx in opts.scaling_contexts:
            enc_len = 32
            prompt_len = max(1, ctx - len(prefix) - enc_len - 1)
            enc = torch.randint(
                5, model.encoder.get_input_embeddings().num_embeddings, (1, enc_len), generator=gen
            )
            prompt = torch.randint(5, lm_vocab, (1, prompt_len), generator=gen)
            prompt[prompt == proc.soft_token_id] = 5
            ids = torch.cat([torch.tensor([prefix + [proc.soft_token_id] * (enc_len + 1)]), prompt], dim=1)
            batch = {
                "encoder_input_ids": enc.to(dev),
                "encoder_attention_mask": torch.ones_like(enc).to(dev),
                "input_ids": ids.to(dev),
                "attention_mask": torch.ones_like(ids).to(dev),
            }

            def gen_tokens(k: int, timer: StepTimer | None = None, batch: dict = batch) -> None:
                with autocast(dev, opts.dtype):
                    model.generate(
                        **batch,
                        max_new_tokens=k,
                        min_new_tokens=k,
                        do_sample=False,
                        pad_token_id=proc.lm_tokenizer.pad_token_id,
                        stopping_criteria=StoppingCriteriaList([timer] if timer is not None else []),
                    )

            gen_tokens(2)  # warm-up
            step_ms = []
            for _ in range(reps):
                timer = StepTimer(dev)
                gen_tokens(steps + 1, timer)
                step_ms.append(_split_times(timer.times[0], timer.times, 1)["median_step_ms"])
            n = ids.shape[1]
            # A decode step: every LM matmul and the head once, attention over the context (QK^T and AV).
            step_flops = (
                2 * shape.lm.linear_params
                + 2 * shape.head_params
                + 4 * shape.lm.layers * shape.lm.attn_width * (n + steps / 2)
            )
            decode_rows.append(
                {
                    "context": n,
                    "us_per_token": 1000 * min(step_ms),
                    "flops_per_token": step_flops,
                }
            )

    def summarize(rows: list[dict]) -> dict[str, Any]:
        first = rows[0]
        for r in rows:
            r["time_per_token_vs_first"] = r["us_per_token"] / first["us_per_token"]
            r["flops_per_token_vs_first"] = r["flops_per_token"] / first["flops_per_token"]
        worst = max(r["time_per_token_vs_first"] / r["flops_per_token_vs_first"] for r in rows)
        return {"rows": rows, "worst_time_over_flops_growth": worst}

    return {
        "peak_flops": peak,
        "over_batch": summarize(over_batch),
        "over_length": summarize(over_length),
        "collate_over_examples": summarize(collate_rows),
        "decode_over_context": summarize(decode_rows),
    }


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
