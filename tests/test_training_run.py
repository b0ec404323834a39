"""The training loop end to end on tiny random models: adapter checkpoints, both modes, streaming, gradient
checkpointing, exact resume after SIGKILL, a 2-process accelerate (gloo) run, and --dry-run for the paper configs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from conftest import require_shared
from safetensors.torch import load_file

from langbridge import LangBridgeModel, LangBridgeProcessor
from langbridge.training import dry_run, load_config, train
from langbridge.training.config import config_from_dict
from langbridge.training.metrics import read_metrics
from langbridge.training.recipe import compile_layers, enable_checkpointing, set_train_mode

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "What is 2 plus 3?",
    "Janet has 16 eggs and sells 3 of them every day at the market.",
    "How many eggs are left after she eats three for breakfast?",
    "def add(a, b): return a + b",
    "The ducks lay 16 eggs per day.",
    "She bakes muffins for her friends every day with four.",
]


def write_labeled(path: Path, n: int = 48) -> Path:
    rows = [
        {
            "instruction": f"{SENTENCES[i % 6]} Case {i}.",
            "output": f"The answer is {i % 7 + 2}." + " Step." * (i % 5),
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_docs(path: Path, n: int = 40) -> Path:
    docs = [" ".join(SENTENCES[(i + j) % 6] for j in range(2 + i % 9)) for i in range(n)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def base_config(tiny_dirs: dict[str, str], tmp_path: Path, **top) -> dict:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        write_labeled(data)
    cfg = {
        "model": {"encoder": tiny_dirs["bert"], "lm": tiny_dirs["llama"]},
        "data": {
            "train": [{"path": str(data)}],
            "eval_size": 8,
            "max_encoder_length": 48,
            "max_lm_length": 40,
        },
        "optim": {"lr_bridge": 5e-3},
        "batch_size": 4,
        "max_steps": 8,
        "num_epochs": None,
        "log_interval": 1,
        "eval_interval": 4,
        "eval_batch_size": 8,
        "save_interval": 0,
        "progress_bar": False,
        # One thread: tiny matrices gain nothing from more, and on a busy CI machine OpenMP threads waiting for
        # each other make every step ~100x slower.
        "num_threads": 1,
        "output_dir": str(tmp_path / "run"),
    }
    cfg.update(top)
    return cfg


def write_yaml(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def train_rows(output_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(output_dir) if r["split"] == "train"]


def eval_rows(output_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_loss"]) for r in read_metrics(output_dir) if r["split"] == "eval"]


# ----------------------------------------------------------------------------- end to end


def test_labeled_run_saves_a_loadable_adapter_that_learned(tiny_dirs, tmp_path):
    cfg = config_from_dict(base_config(tiny_dirs, tmp_path, max_steps=12))
    final = train(cfg)
    out = Path(cfg.output_dir)
    assert final == out / "final"

    rows = read_metrics(out)
    train_log = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_log] == list(range(1, 13))
    for key in (
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "cpu_s",
        "peak_rss_mb",
        "elapsed_s",
        "enc_eos_norm",
    ):
        assert all(r[key] is not None for r in train_log), key
    # The bridge's output scale is logged (docs/science.md): positive, and it moves as the bridge trains.
    norms = [r["soft_token_norm"] for r in train_log]
    assert all(n is not None and n > 0 for n in norms) and norms[0] != norms[-1]
    assert train_log[0]["lr"] == pytest.approx(5e-3)  # constant schedule
    evals = eval_rows(out)
    assert [s for s, _ in evals] == [0, 4, 8, 12]  # step 0: the untrained bridge, the baseline
    assert evals[-1][1] < evals[1][1] < evals[0][1]  # the held-out loss goes down

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 12 and summary["final_eval_loss"] == pytest.approx(evals[-1][1])
    assert yaml.safe_load((out / "train_config.yaml").read_text())["max_steps"] == 12

    # The saved adapter is the trained model: it reproduces the final held-out loss (one eval batch of 8).
    files = {p.name for p in final.iterdir()}
    assert {"config.json", "adapter_model.safetensors", "langbridge_processor.json"} <= files
    saved = load_file(final / "adapter_model.safetensors")
    assert saved and all(k.startswith("bridge.") for k in saved)  # frozen encoder: only the bridge
    model = LangBridgeModel.from_pretrained(final).eval()
    processor = LangBridgeProcessor.from_pretrained(final)
    from langbridge.training.batching import Collator
    from langbridge.training.data import build_data

    data = build_data(cfg.data, processor, cfg.seed)
    batch = Collator(processor, append_eos=True)(data.eval_examples)
    with torch.no_grad():
        loss = model(**batch).loss
    assert float(loss) == pytest.approx(summary["final_eval_loss"], rel=1e-4)
    gen = model.generate(**processor(["What is 2 plus 3?"]), max_new_tokens=3, do_sample=False)
    assert gen.shape[1] > 0


def test_cli_from_python_and_existing_runs(tiny_dirs, tmp_path, capsys):
    from langbridge.cli import main

    config = write_yaml(base_config(tiny_dirs, tmp_path, max_steps=2, eval_interval=0), tmp_path / "c.yaml")
    assert main(["train", str(config)]) == 0
    assert "adapter saved to" in capsys.readouterr().out
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    # A finished run is never overwritten by accident.
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err
    # Missing data: one line naming the file and the fix.
    assert (
        main(["train", str(config), f"output_dir={tmp_path / 'other'}", "data.train.0.path=nope.jsonl"]) == 2
    )
    assert "data file 'nope.jsonl' not found" in capsys.readouterr().err


def test_unlabeled_mode_trains_encoder_and_bridge_with_warmup_cosine(tiny_dirs, tmp_path):
    docs = write_docs(tmp_path / "docs.txt")
    cfg = base_config(
        tiny_dirs,
        tmp_path,
        max_steps=6,
        eval_interval=3,
        batch_size=2,
        gradient_accumulation_steps=2,
    )
    cfg["model"] = {"encoder": tiny_dirs["mt5"], "lm": tiny_dirs["gpt2"], "freeze_encoder": False}
    cfg["data"].update(
        mode="unlabeled",
        train=[{"path": str(docs), "txt_unit": "paragraph"}],
        eval_size=4,
        min_split_tokens=4,
        max_split_tokens=24,
        max_lm_length=24,
    )
    cfg["optim"] = {"lr_bridge": 1e-3, "lr_encoder": 1e-4, "schedule": "cosine", "warmup_steps": 2}
    final = train(config_from_dict(cfg))
    rows = [r for r in read_metrics(tmp_path / "run") if r["split"] == "train"]
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)  # linear warmup to the peak
    assert lrs[-1] < lrs[2] < lrs[1]  # then cosine decay
    saved = load_file(final / "adapter_model.safetensors")
    encoder_keys = [k for k in saved if k.startswith("encoder.")]
    assert encoder_keys and any(k.startswith("bridge.") for k in saved)
    # The trained encoder weights differ from the base encoder's; the base LM is untouched.
    base = LangBridgeModel.from_encoder_and_lm(tiny_dirs["mt5"], tiny_dirs["gpt2"], freeze_encoder=False)
    base_state = base.state_dict()
    assert any(not torch.equal(saved[k], base_state[k]) for k in encoder_keys)
    loaded = LangBridgeModel.from_pretrained(final)
    for k in encoder_keys:
        assert torch.equal(loaded.state_dict()[k], saved[k])


def test_trackers_are_used_when_installed_and_skipped_with_a_warning_otherwise(tiny_dirs, tmp_path, caplog):
    from accelerate.utils import is_tensorboard_available

    cfg = base_config(tiny_dirs, tmp_path, max_steps=2, eval_interval=0, report_to=["tensorboard"])
    with caplog.at_level("WARNING", logger="langbridge.training"):
        train(config_from_dict(cfg))
    assert [s for s, _ in train_rows(tmp_path / "run")] == [1, 2]  # metrics.jsonl is always written
    if is_tensorboard_available():
        assert list((tmp_path / "run").rglob("events.out.tfevents.*"))
    else:
        assert "report_to: tensorboard is not installed" in caplog.text


def test_streaming_run(tiny_dirs, tmp_path):
    cfg = base_config(tiny_dirs, tmp_path, max_steps=5, eval_interval=5)
    cfg["data"].update(streaming=True, shuffle_buffer=8, mega_batch_mult=2, eval_size=4)
    final = train(config_from_dict(cfg))
    assert (final / "adapter_model.safetensors").is_file()
    assert [s for s, _ in train_rows(tmp_path / "run")] == [1, 2, 3, 4, 5]
    assert [s for s, _ in eval_rows(tmp_path / "run")] == [0, 5]


def test_gradient_checkpointing_recomputes_frozen_layers_with_the_same_gradients(tiny_langbridge, tmp_path):
    from langbridge.training.batching import Collator
    from langbridge.training.data import Example

    model, processor = tiny_langbridge("bert", "llama")
    examples = [Example("What is 2 plus 3?", " 5"), Example("Janet has 16 eggs.", " She sells 3.")]
    batch = Collator(processor, append_eos=True)(examples)

    def bridge_grads(checkpointing: bool) -> tuple[list[torch.Tensor], int]:
        model.zero_grad(set_to_none=True)
        if checkpointing:
            enable_checkpointing(model)
        else:
            model.activation_checkpointing_disable()
        set_train_mode(model)
        calls = []
        hook = model.lm.model.layers[0].self_attn.register_forward_hook(lambda *a: calls.append(1))
        model(**batch, use_cache=False).loss.backward()
        hook.remove()
        return [p.grad.clone() for p in model.bridge.parameters()], len(calls)

    plain, plain_calls = bridge_grads(False)
    ckpt, ckpt_calls = bridge_grads(True)
    assert (plain_calls, ckpt_calls) == (1, 2)  # the frozen LM layer is recomputed in the backward pass
    assert not model.lm.model.layers[0].self_attn.training  # its dropout stays off
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_compiled_layers_give_the_eager_loss_and_gradients(tiny_langbridge):
    from langbridge.training.batching import Collator
    from langbridge.training.data import Example

    model, processor = tiny_langbridge("bert", "llama")
    collate = Collator(processor, append_eos=True)
    batches = [
        collate([Example("What is 2 plus 3?", " 5"), Example("Janet has 16 eggs.", " She sells 3.")]),
        collate([Example("Swali?", " Jibu ni kumi na mbili.")]),  # another shape: no recompile needed
    ]
    set_train_mode(model)

    def step(batch) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(**batch, logits_to_keep="targets").loss
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.bridge.parameters()]

    eager = [step(b) for b in batches]
    assert len(compile_layers(model)) == 4  # two encoder and two LM layers
    for (loss, grads), batch in zip(eager, batches, strict=True):
        c_loss, c_grads = step(batch)
        assert c_loss == pytest.approx(loss, rel=1e-5)
        for a, b in zip(grads, c_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- resume after a forced kill

PAUSE_WRAPPER = """
import os, sys, time
from langbridge.training import checkpointing
pause_in = os.environ["LB_TEST_PAUSE_IN"]
fsync_tree = checkpointing._fsync_tree

def fsync_then_hang(root):
    # Files of the checkpoint are written but not yet renamed into place: the worst moment to die.
    fsync_tree(root)
    if root.name == pause_in:
        print("PAUSED", flush=True)
        time.sleep(600)

checkpointing._fsync_tree = fsync_then_hang
from langbridge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # subprocesses (still run by default and in CI)
def test_resume_after_sigkill_repeats_the_uninterrupted_loss_curve(tiny_dirs, tmp_path):
    settings = {
        "max_steps": 12,
        "log_interval": 3,  # a partly filled logging window is saved at step 4 and must be restored
        "eval_interval": 4,
        "save_interval": 4,
        "save_total_limit": None,
    }
    reference_cfg = config_from_dict(
        base_config(tiny_dirs, tmp_path, **settings, output_dir=str(tmp_path / "ref"))
    )
    train(reference_cfg)

    killed_dir = tmp_path / "killed"
    config = write_yaml(
        base_config(tiny_dirs, tmp_path, **settings, output_dir=str(killed_dir)), tmp_path / "k.yaml"
    )
    wrapper = tmp_path / "pause.py"
    wrapper.write_text(PAUSE_WRAPPER)
    env = {**os.environ, "LB_TEST_PAUSE_IN": ".checkpoint-8.tmp", "PYTHONPATH": str(REPO / "src")}
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(wrapper), "train", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
        )
        watchdog = threading.Timer(240, proc.kill)
        watchdog.start()
        try:
            lines = []
            while not lines or lines[-1] not in ("PAUSED", ""):
                lines.append(proc.stdout.readline().strip() if proc.stdout.readable() else "")
            assert lines[-1] == "PAUSED", (tmp_path / "stderr.txt").read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            watchdog.cancel()
            proc.kill()
            proc.stdout.close()

    # The half-written checkpoint never became "latest"; the killed run had logged past its last checkpoint.
    assert (killed_dir / "latest").read_text().strip() == "checkpoint-4"
    assert (killed_dir / ".checkpoint-8.tmp").is_dir() and not (killed_dir / "checkpoint-8").exists()
    assert max(step for step, _ in train_rows(killed_dir)) == 6
    assert not (killed_dir / "final").exists()

    resumed_cfg = load_config(config)
    final = train(resumed_cfg, resume=True)
    assert not (killed_dir / ".checkpoint-8.tmp").exists()

    ref, got = train_rows(tmp_path / "ref"), train_rows(killed_dir)
    assert [s for s, _ in got] == [s for s, _ in ref] == [3, 6, 9, 12]
    for (_, a), (_, b) in zip(ref, got, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    ref_eval, got_eval = eval_rows(tmp_path / "ref"), eval_rows(killed_dir)
    assert [s for s, _ in got_eval] == [0, 4, 8, 12]
    for (_, a), (_, b) in zip(ref_eval, got_eval, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    a, b = (
        load_file(tmp_path / "ref" / "final" / "adapter_model.safetensors"),
        load_file(final / "adapter_model.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)


def test_resume_without_checkpoint_starts_fresh_and_warns_on_changed_settings(tiny_dirs, tmp_path, caplog):
    cfg = base_config(tiny_dirs, tmp_path, max_steps=4, save_interval=2, eval_interval=0)
    train(config_from_dict(cfg), resume="auto")  # --resume-or-start, nothing to resume: starts at step 0
    assert [s for s, _ in train_rows(tmp_path / "run")] == [1, 2, 3, 4]
    # Continue the run (from its last checkpoint, step 2) for longer with a changed learning rate: allowed,
    # but said out loud.
    cfg.update(max_steps=6)
    cfg["optim"] = {"lr_bridge": 1e-3}
    with caplog.at_level("WARNING", logger="langbridge.training"):
        train(config_from_dict(cfg), resume=True)
    assert "optim.lr_bridge" in caplog.text and "max_steps" not in caplog.text
    assert [s for s, _ in train_rows(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- 2 processes (gloo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # subprocesses (still run by default and in CI)
def test_two_process_accelerate_run_matches_gradient_accumulation(tiny_dirs, tmp_path):
    """DDP over 2 CPU processes (batch 2 each) computes the same steps as 1 process accumulating 2 batches of 2."""
    common = {"batch_size": 2, "effective_batch_size": 4, "max_steps": 5, "eval_interval": 5}
    train(config_from_dict(base_config(tiny_dirs, tmp_path, **common, output_dir=str(tmp_path / "one"))))

    config = write_yaml(
        base_config(tiny_dirs, tmp_path, **common, output_dir=str(tmp_path / "two")), tmp_path / "d.yaml"
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs" / "accelerate" / "ddp_cpu.yaml"),
        "--main_process_port",
        str(free_port()),
        "-m",
        "langbridge.training",
        str(config),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    one, two = train_rows(tmp_path / "one"), train_rows(tmp_path / "two")
    assert [s for s, _ in two] == [1, 2, 3, 4, 5]
    for (_, a), (_, b) in zip(one, two, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    (_, e1), (_, e2) = eval_rows(tmp_path / "one")[-1], eval_rows(tmp_path / "two")[-1]
    assert e1 == pytest.approx(e2, rel=1e-5)
    a = load_file(tmp_path / "one" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "final" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- dry run


def test_dry_run_counts_match_the_real_model(tiny_dirs, tmp_path):
    cfg = config_from_dict(base_config(tiny_dirs, tmp_path))
    report = dry_run(cfg, print_fn=lambda s: None)
    real = LangBridgeModel.from_encoder_and_lm(tiny_dirs["bert"], tiny_dirs["llama"])
    assert report["parameters"] == sum(p.numel() for p in real.parameters())
    assert report["trainable"] == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert (
        report["sharded"]["memory_bytes"]["adamw_states_fp32"] * 8
        == report["memory_bytes"]["adamw_states_fp32"]
    )


PAPER_SIZES = {
    # (total parameters in billions, trainable in millions): bridge only for instruction-tuned LMs,
    # encoder + bridge for base LMs.
    "metamath-7b": (8.42, 8.4),
    "orca2-7b": (8.42, 8.4),
    "llemma-7b": (8.42, 1678.4),
    "codellama-7b": (8.42, 1678.4),
    "metamath-13b-mt5-xl": (14.70, 10.5),
    "metamath-13b-mt5-xxl": (18.69, 21.0),
}


def test_dry_run_on_the_paper_configs_needs_no_weights(monkeypatch, capsys):
    from langbridge.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # builds from configs/model_configs only
    assert main(["train", str(REPO / "configs" / "paper" / "metamath-7b.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "memory estimate per device" in out and "8 GPUs ZeRO-2" in out and "total" in out
    for name, (billions, trainable_millions) in PAPER_SIZES.items():
        printed = []
        report = dry_run(load_config(REPO / "configs" / "paper" / f"{name}.yaml"), print_fn=printed.append)
        assert f"{report['parameters']:,}" in printed[0]
        assert report["parameters"] / 1e9 == pytest.approx(billions, abs=0.01), name
        assert report["trainable"] / 1e6 == pytest.approx(trainable_millions, abs=0.1), name
        assert report["parts"]["lm"]["trainable"] == 0
        assert 10 * 2**30 < report["memory_bytes"]["total"] < 80 * 2**30
        # ZeRO-2 over 8 GPUs only shards gradients and optimizer states.
        sharded = report["sharded"]["memory_bytes"]
        assert sharded["frozen_weights"] == report["memory_bytes"]["frozen_weights"]
        assert sharded["adamw_states_fp32"] == pytest.approx(report["memory_bytes"]["adamw_states_fp32"] / 8)


# ----------------------------------------------------------------------------- the real default pair


@pytest.mark.real_models
def test_default_config_trains_the_real_pair_for_a_few_steps(tmp_path):
    pytest.importorskip("gguf")
    require_shared("gsm8k", "train.jsonl")
    cfg = load_config(
        REPO / "configs" / "default.yaml",
        [
            "max_steps=2",
            "batch_size=2",
            "data.eval_size=4",
            "data.max_lm_length=48",
            "eval_interval=2",
            "save_interval=1",
            "num_threads=1",
            "progress_bar=false",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    final = train(cfg)
    processor = LangBridgeProcessor.from_pretrained(final)
    assert processor.lm_prefix == "<|im_start|>user\n"
    assert processor.lm_prompt == "<|im_end|>\n<|im_start|>assistant\n"
    assert (tmp_path / "run" / "latest").read_text().strip() == "checkpoint-1"
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["final_eval_loss"] < 20
