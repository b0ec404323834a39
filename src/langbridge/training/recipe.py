"""The training recipe: one plain loop over a plain DataLoader, with `accelerate` for devices, mixed precision,
gradient accumulation and DDP / FSDP / DeepSpeed (`accelerate launch --config_file configs/accelerate/*.yaml`).

Checkpoints (saving, rotation, resuming) are `checkpointing`'s; metrics rows are `metrics`'.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from langbridge.training.batching import (
    BatchIterator,
    Collator,
    batches_per_epoch,
    count_tokens,
    eval_batches,
)
from langbridge.training.checkpoint_io import LATEST, CheckpointError
from langbridge.training.checkpointing import (
    FINAL,
    Checkpointer,
    Position,
    config_changes,
    latest_checkpoint,
)
from langbridge.training.checkpointing import list_checkpoints as list_checkpoints  # noqa: F401 (public name)
from langbridge.training.config import ConfigError, TrainConfig, flatten_config, model_settings, validate
from langbridge.training.data import TrainData, build_data
from langbridge.training.metrics import METRICS, BridgeOutputNorms, MetricsWriter
from langbridge.utils import atomic_write_text, peak_rss_mb, torch_threads

logger = logging.getLogger("langbridge.training")


# ----------------------------------------------------------------------------- small helpers


def resolve_precision(mixed_precision: str, dtype: str) -> tuple[str, torch.dtype]:
    """(accelerate mixed_precision, dtype for the frozen weights). CPU always trains in fp32."""
    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    mp = mixed_precision
    if mp == "auto":
        mp = "bf16" if bf16_ok else "fp16" if cuda else "no"
    if mp != "no" and not cuda:
        raise ConfigError(
            f"mixed_precision={mixed_precision!r} needs a GPU; use mixed_precision=no (or auto) on CPU"
        )
    if mp == "bf16" and not bf16_ok:
        raise ConfigError("mixed_precision=bf16: this GPU has no bf16 support; use fp16 or auto")
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if mp == "bf16" else torch.float32
    else:
        torch_dtype = names[dtype]
    if torch_dtype != torch.float32 and not cuda:
        raise ConfigError(
            f"model.dtype={dtype} on CPU is slow and imprecise; use model.dtype=float32 (or auto)"
        )
    return mp, torch_dtype


# ----------------------------------------------------------------------------- model / optimizer


def build_model_and_processor(cfg: TrainConfig, torch_dtype: torch.dtype) -> tuple[Any, Any]:
    """The processor first (it owns the soft-token placeholder), then the model built for it."""
    from langbridge import LangBridgeModel, LangBridgeProcessor
    from langbridge.processing import default_lm_prefix, load_encoder_tokenizer, load_lm_tokenizer
    from langbridge.training.templates import get_template

    m, d = cfg.model, cfg.data
    template = get_template(d.template, d.encoder_template, d.lm_prompt)
    lm_tokenizer = load_lm_tokenizer(m.lm)
    lm_prefix = d.lm_prefix
    if lm_prefix is None:
        # The LM's BOS (the paper's layout) followed by the template's opening, e.g. ChatML's user turn.
        lm_prefix = default_lm_prefix(lm_tokenizer) + template.lm_prefix
    processor = LangBridgeProcessor(
        load_encoder_tokenizer(m.encoder),
        lm_tokenizer,
        encoder_template=template.encoder_template,
        lm_prompt=template.lm_prompt,
        lm_prefix=lm_prefix,
        max_encoder_length=d.max_encoder_length,
        max_lm_length=d.max_lm_length,
    )
    model = LangBridgeModel.from_encoder_and_lm(
        m.encoder, m.lm, dtype=torch_dtype, processor=processor, **model_settings(cfg)
    )
    if m.init_bridge_from:
        init_bridge(model, m.init_bridge_from)
    # The frozen LM may be held in bf16; the weights we train stay fp32 (AdamW on bf16 weights loses updates).
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if m.gradient_checkpointing:
        enable_checkpointing(model)
    if m.compile:
        compile_layers(model)
    return model, processor


def init_bridge(model: Any, source: str) -> None:
    """Copy the bridge weights of another run's checkpoint (full or adapter-only) into `model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from langbridge.checkpoint import ADAPTER_WEIGHTS, FULL_WEIGHTS

    folder = Path(source)
    files = [folder / name for name in (ADAPTER_WEIGHTS, FULL_WEIGHTS) if (folder / name).is_file()]
    if not files:
        raise ConfigError(
            f"model.init_bridge_from={source!r}: no {ADAPTER_WEIGHTS} or {FULL_WEIGHTS} there; point it at a "
            "checkpoint folder written by `langbridge train` (e.g. OUTPUT_DIR/final)."
        )
    try:
        state = {k: v for k, v in load_file(files[0]).items() if k.startswith("bridge.")}
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"model.init_bridge_from: could not read {files[0]} ({err}).") from err
    try:
        model.load_adapter_state_dict(state, source=str(files[0]))
    except ValueError as err:
        raise ConfigError(f"model.init_bridge_from: {err} Use the same bridge options as that run.") from err


def fit_bridge(model: Any, processor: Any, data: Any, n: int) -> None:
    """`model.bridge_init: ridge`: the closed-form start, fitted on the first `n` training inputs."""
    from langbridge.bridge_init import fit_linear_bridge

    if data.train is not None:
        texts = [data.train[i].encoder_text for i in data.train_indices[:n]]
    else:
        texts = [ex.encoder_text for _, ex in zip(range(n), (ex for _, ex in data.stream()), strict=False)]
    stats = fit_linear_bridge(model, processor, texts)
    logger.info("bridge_init=ridge on %d inputs: %s", len(texts), stats)


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing of every encoder and LM layer, non-reentrant so frozen layers whose
    inputs need gradients recompute correctly. transformers >= 5.x renamed the method; accept both."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def compile_layers(model: Any) -> list[torch.nn.Module]:
    """torch.compile every encoder and LM layer rather than the whole model: one compiled graph serves all layers
    of a kind, compiling takes seconds instead of minutes, and the soft-token merge (data-dependent) stays eager."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(
            "model.compile: found no transformer layers to compile in this encoder/LM; set model.compile: false."
        )
    for layer in layers:
        layer.compile(dynamic=True)
    return layers


def set_train_mode(model: torch.nn.Module) -> None:
    """Train mode for what we train; frozen parts stay in eval mode so their dropout adds no noise.

    transformers only checkpoints a layer whose own `training` flag is set, so with gradient checkpointing the
    layers of a frozen part get that flag (and nothing else: their dropout submodules stay in eval mode).
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    model.train()
    for part in (model.encoder, model.lm):
        if not any(p.requires_grad for p in part.parameters()):
            part.eval()
            for module in part.modules():
                if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
                    module.training = True


def param_groups(model: Any, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Bridge at lr_bridge, trainable encoder weights at lr_encoder; nothing of the LM."""
    bridge = [p for p in model.bridge.parameters() if p.requires_grad]
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    lm = [n for n, p in model.lm.named_parameters() if p.requires_grad]
    if lm:
        raise RuntimeError(f"LM parameters are trainable ({lm[:3]}...); LangBridge keeps the LM frozen")
    o = cfg.optim
    groups = [{"params": bridge, "lr": o.lr_bridge, "weight_decay": o.weight_decay_bridge, "name": "bridge"}]
    if encoder:
        if o.lr_encoder == 0:
            raise ConfigError(
                "optim.lr_encoder=0 but the encoder is trainable; set model.freeze_encoder=true instead"
            )
        groups.append(
            {"params": encoder, "lr": o.lr_encoder, "weight_decay": o.weight_decay_encoder, "name": "encoder"}
        )
    return groups


def count_steps(cfg: TrainConfig, data: TrainData, world: int, grad_accum: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    assert data.num_train is not None and cfg.num_epochs is not None  # validated: epochs need map-style data
    per_epoch = batches_per_epoch(data.num_train, cfg.batch_size, world)
    if per_epoch == 0:
        raise ConfigError(
            f"{data.num_train} training examples give no full round of batches for {world} process(es) at "
            f"batch_size={cfg.batch_size}; lower batch_size or add data"
        )
    return max(1, math.floor(cfg.num_epochs * per_epoch / grad_accum))


def resolve_grad_accum(cfg: TrainConfig, world: int) -> int:
    if cfg.effective_batch_size is None:
        return cfg.gradient_accumulation_steps
    per_step = cfg.batch_size * world
    if cfg.effective_batch_size % per_step:
        raise ConfigError(
            f"effective_batch_size={cfg.effective_batch_size} is not a multiple of batch_size x processes "
            f"= {cfg.batch_size} x {world}; change batch_size or the number of processes"
        )
    return cfg.effective_batch_size // per_step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing from the diverged weights was saved."""


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def held_out_loss(model: Any, accelerator: Any, examples: list, collator: Collator, batch_size: int) -> float:
    """Token-weighted mean loss over the held-out examples, summed across processes."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch_examples, counts in eval_batches(
        examples, batch_size, accelerator.process_index, accelerator.num_processes
    ):
        batch = {k: v.to(accelerator.device) for k, v in collator(batch_examples).items()}
        n = int((batch["labels"][:, 1:] != -100).sum())
        with accelerator.autocast():
            out = model(**batch, use_cache=False, logits_to_keep="targets")
        if counts and n:
            total[0] += out.loss.double() * n
            total[1] += n
    total = accelerator.reduce(total, reduction="sum")
    set_train_mode(accelerator.unwrap_model(model))
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


# ----------------------------------------------------------------------------- the recipe


def train(config: TrainConfig, resume: bool | str = False) -> Path:
    """Train a LangBridge bridge (and the encoder when not frozen). Returns the directory of the final adapter.

    resume: True continues from ``output_dir/latest`` and fails when there is none; ``"auto"`` continues
    when there is a checkpoint and starts from step 0 otherwise."""
    cfg = validate(config)
    with torch_threads(cfg.num_threads):  # a Python caller's process keeps its own setting
        return _train(cfg, resume)


def _train(cfg: TrainConfig, resume: bool | str) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed
    from tqdm.auto import tqdm

    output_dir = Path(cfg.output_dir)
    mp, torch_dtype = resolve_precision(cfg.mixed_precision, cfg.model.dtype)

    trackers = []
    if cfg.report_to:
        from accelerate.utils import is_tensorboard_available, is_wandb_available

        available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
        for name in cfg.report_to:
            if available[name]:
                trackers.append(name)
            else:
                logger.warning(
                    "report_to: %s is not installed (pip install %s); logging to metrics.jsonl only",
                    name,
                    name,
                )
    world_guess = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        gradient_accumulation_steps=resolve_grad_accum(cfg, world_guess),
        mixed_precision=mp,
        log_with=trackers or None,
        project_dir=str(output_dir),
        step_scheduler_with_optimizer=False,
        # Without a GPU, processes started by torchrun / `accelerate launch` join a gloo (CPU) process group.
        cpu=not torch.cuda.is_available(),
    )
    world = accelerator.num_processes
    grad_accum = resolve_grad_accum(cfg, world)
    accelerator.gradient_accumulation_steps = grad_accum
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    main = accelerator.is_main_process
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING, format="%(asctime)s %(message)s", force=False
    )

    # ---- output directory and resume point
    checkpoint = None
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(
            f"output_dir={output_dir} is an existing file, not a folder; choose another output_dir"
        )
    if resume:
        checkpoint = latest_checkpoint(output_dir)
        if checkpoint is None and resume != "auto":
            # A mistyped path would otherwise silently train from scratch.
            raise CheckpointError(
                f"--resume: no checkpoint in {output_dir} (no '{LATEST}' file); check output_dir, or pass "
                "--resume-or-start to start from step 0 when there is none"
            )
        if checkpoint is None and main:
            logger.warning("--resume-or-start: no checkpoint in %s yet; starting from step 0", output_dir)
    elif main and ((output_dir / LATEST).exists() or (output_dir / FINAL).exists()):
        raise FileExistsError(
            f"{output_dir} already holds a training run; pass --resume to continue it, or set output_dir to a new folder"
        )
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in output_dir.glob(".checkpoint-*.tmp"):  # leftovers of a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        atomic_write_text(output_dir / "train_config.yaml", cfg.to_yaml())
    accelerator.wait_for_everyone()

    # ---- model, data, optimizer
    set_seed(cfg.seed)
    model, processor = build_model_and_processor(cfg, torch_dtype)
    set_train_mode(model)
    data = build_data(cfg.data, processor, cfg.seed)
    if cfg.model.bridge_init == "ridge" and checkpoint is None:
        fit_bridge(model, processor, data, cfg.model.bridge_init_examples)
    collator = Collator(processor, append_eos=data.append_eos)
    total_steps = count_steps(cfg, data, world, grad_accum)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg),
        betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
        eps=cfg.optim.adam_eps,
        # One fused kernel per step on GPU; sharded engines (FSDP, DeepSpeed) keep torch's default (None: foreach
        # on GPU; False would also switch foreach off).
        fused=True if accelerator.device.type == "cuda" and not sharded else None,
    )
    from transformers import get_scheduler

    warmup = cfg.optim.warmup_steps or math.ceil(cfg.optim.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        cfg.optim.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # We shard batches ourselves (no prepared DataLoader), so DeepSpeed must be told the micro batch size.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    model, optimizer = accelerator.prepare(model, optimizer)
    if sharded:
        accelerator.register_for_checkpointing(scheduler)
    trainable = [p for p in model.parameters() if p.requires_grad]

    checkpointer = Checkpointer(accelerator, output_dir, sharded, cfg.save_total_limit)
    metrics = MetricsWriter(accelerator, output_dir / METRICS, bool(trackers))
    pos = Position()
    if checkpoint is not None:
        changed = config_changes(checkpoint, cfg)
        if changed and main:
            logger.warning(
                "--resume: these settings differ from the checkpoint's, so the run will not repeat the "
                "uninterrupted loss curve: %s",
                ", ".join(changed),
            )
        pos = checkpointer.load(checkpoint, model, optimizer, scheduler)
        metrics.truncate_after(pos.step)
        if main:
            logger.info(
                "resumed from %s (step %d, epoch %d, batch %d)",
                checkpoint,
                pos.step,
                pos.epoch,
                pos.batch_in_epoch,
            )
    elif main and (output_dir / METRICS).exists():
        (output_dir / METRICS).unlink()
    if trackers:
        accelerator.init_trackers("langbridge", config=flatten_config(cfg.to_dict()))

    if main:
        logger.info(
            "data: %s (%s examples, %d held out), mode=%s, template=%s",
            ", ".join(data.sources),
            data.num_train if data.num_train is not None else "streamed",
            len(data.eval_examples),
            cfg.data.mode,
            data.template.name,
        )
        logger.info(
            "steps: %d x (batch %d x accumulation %d x %d process(es)), precision=%s, device=%s",
            total_steps,
            cfg.batch_size,
            grad_accum,
            world,
            mp,
            accelerator.device,
        )
        logger.info("\n%s", accelerator.unwrap_model(model).trainable_parameters_summary())

    # ---- loop
    batches = BatchIterator(data, cfg, collator, accelerator.process_index, world)(
        pos.epoch, pos.batch_in_epoch
    )
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    bar = tqdm(
        total=total_steps,
        initial=pos.step,
        disable=not (main and cfg.progress_bar),
        desc="train",
        dynamic_ncols=True,
        unit="step",
    )
    window_start = time.perf_counter()
    window_cpu = time.process_time()
    run_start = time.perf_counter() - pos.elapsed
    start_step, start_elapsed = pos.step, pos.elapsed
    last_eval = float("nan")
    grad_norm = None
    norms = BridgeOutputNorms(accelerator.unwrap_model(model).bridge)
    if data.eval_examples and cfg.eval_interval and pos.step == 0:
        # The untrained bridge's held-out loss: the baseline the later evaluations are compared with.
        last_eval = held_out_loss(model, accelerator, data.eval_examples, collator, eval_bs)
        metrics.write({"split": "eval", "step": 0, "eval_loss": last_eval})
        if main:
            bar.write(f"step 0: held-out loss {last_eval:.4f}")
        window_start, window_cpu = time.perf_counter(), time.process_time()
    while pos.step < total_steps:
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for _ in range(grad_accum):
            pos.epoch, pos.batch_in_epoch, batch = next(batches)
            tokens, targets = count_tokens(batch)
            pos.window_tokens += tokens
            pos.window_targets += targets
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    # The LM head and loss run only where targets are: same loss and gradients, less work.
                    out = model(**batch, use_cache=False, logits_to_keep="targets")
                # A batch whose targets were all truncated away gives a zero that keeps the graph (DDP).
                loss = out.loss
                accelerator.backward(loss)
                step_loss += loss.detach().double() / grad_accum
                if accelerator.sync_gradients:
                    if cfg.optim.max_grad_norm > 0:
                        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
        pos.step += 1
        step_mean = float(accelerator.reduce(step_loss, reduction="mean"))
        if not math.isfinite(step_mean):
            # Stop before anything is saved from the broken weights: `final` and later checkpoints stay absent.
            raise TrainingDiverged(
                f"the training loss became {step_mean} at step {pos.step}; nothing was saved from this step on "
                "(no final adapter). Lower optim.lr_bridge or set optim.max_grad_norm, and train again in a new "
                "output_dir"
            )
        pos.window_loss += step_mean
        pos.window_steps += 1
        bar.update(1)

        if pos.step % cfg.log_interval == 0 or pos.step == total_steps:
            window = torch.tensor([pos.window_tokens, pos.window_targets], device=accelerator.device)
            counts = accelerator.reduce(window, reduction="sum")
            now = time.perf_counter()
            pos.tokens += int(counts[0])
            row = {
                "split": "train",
                "step": pos.step,
                "epoch": pos.epoch,
                "loss": pos.window_loss / pos.window_steps,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens_per_s": float(counts[0]) / max(now - window_start, 1e-9),
                "target_tokens_per_s": float(counts[1]) / max(now - window_start, 1e-9),
                "elapsed_s": now - run_start,
                # Process CPU seconds (all threads) of this window: throughput on a shared machine is judged by
                # it, since wall time there depends on what else runs.
                "cpu_s": time.process_time() - window_cpu,
                "peak_rss_mb": round(peak_rss_mb(), 1),
                **norms.row(),
            }
            if torch.cuda.is_available():
                row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            metrics.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}", refresh=False)
            pos.window_loss, pos.window_steps, pos.window_tokens, pos.window_targets = 0.0, 0, 0, 0
            window_start = time.perf_counter()
            window_cpu = time.process_time()

        is_last = pos.step == total_steps
        if data.eval_examples and ((cfg.eval_interval and pos.step % cfg.eval_interval == 0) or is_last):
            t0, c0 = time.perf_counter(), time.process_time()
            last_eval = held_out_loss(model, accelerator, data.eval_examples, collator, eval_bs)
            metrics.write({"split": "eval", "step": pos.step, "eval_loss": last_eval})
            if main:
                bar.write(f"step {pos.step}: held-out loss {last_eval:.4f}")
            # Eval time is not training throughput.
            window_start += time.perf_counter() - t0
            window_cpu += time.process_time() - c0

        if cfg.save_interval and pos.step % cfg.save_interval == 0 and not is_last:
            t0, c0 = time.perf_counter(), time.process_time()
            pos.elapsed = time.perf_counter() - run_start
            path = checkpointer.save(model, optimizer, scheduler, pos, cfg)
            if main:
                bar.write(f"step {pos.step}: saved {path}")
            window_start += time.perf_counter() - t0
            window_cpu += time.process_time() - c0
    bar.close()
    pos.elapsed = time.perf_counter() - run_start

    # ---- final adapter
    final_dir = output_dir / FINAL
    save_final(accelerator, model, processor, final_dir, sharded)
    if main:
        summary = {
            "steps": pos.step,
            "epoch": pos.epoch,
            "tokens": pos.tokens,
            "elapsed_s": pos.elapsed,
            "steps_per_s": (pos.step - start_step) / max(pos.elapsed - start_elapsed, 1e-9),
            "tokens_per_s": pos.tokens / max(pos.elapsed, 1e-9),
            "cpu_s_this_process": time.process_time(),
            "threads": torch.get_num_threads(),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "final_eval_loss": None if math.isnan(last_eval) else last_eval,
            "processes": world,
            "device": str(accelerator.device),
            "mixed_precision": mp,
            "final": str(final_dir),
        }
        if torch.cuda.is_available():
            summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        atomic_write_text(output_dir / "train_summary.json", json.dumps(summary, indent=2))
        logger.info("done: %s", json.dumps(summary))
    if trackers:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return final_dir


def save_final(accelerator: Any, model: Any, processor: Any, final_dir: Path, sharded: bool) -> None:
    """Adapter checkpoint (trained weights + where the base models come from) plus the processor."""
    unwrapped = accelerator.unwrap_model(model)
    if sharded:
        from safetensors.torch import save_file

        from langbridge.checkpoint import ADAPTER_WEIGHTS

        # Sharded engines gather the full state on the main process; keep only what was trained.
        full = accelerator.get_state_dict(model)
        keys = {n for n, p in unwrapped.named_parameters() if p.requires_grad} | {
            k for k in full if k.startswith("bridge.")
        }
        if accelerator.is_main_process:
            final_dir.mkdir(parents=True, exist_ok=True)
            unwrapped.config.save_pretrained(final_dir)
            state = {k: v.detach().float().contiguous().cpu() for k, v in full.items() if k in keys}
            tmp = final_dir / f".{ADAPTER_WEIGHTS}.tmp"
            save_file(state, tmp, metadata={"format": "pt"})
            os.replace(tmp, final_dir / ADAPTER_WEIGHTS)
    elif accelerator.is_main_process:
        unwrapped.save_pretrained(final_dir, adapter_only=True)
    if accelerator.is_main_process:
        processor.save_pretrained(final_dir)
    accelerator.wait_for_everyone()
