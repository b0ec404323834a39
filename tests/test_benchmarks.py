"""Benchmark correctness (no timing): the FLOP formula against torch's FLOP counter, and the official-approach
reference against our model (same numbers where the approaches must agree, the padding-hole effect where they
must not)."""

from __future__ import annotations

import pytest
import torch
from conftest import require_shared
from torch.utils.flop_counter import FlopCounterMode

# `benchmarks` is importable because pytest puts the repository root on sys.path (pyproject: pythonpath).
from benchmarks.common import busy_cores, choose_threads
from benchmarks.flops import batch_lengths, train_shape, training_flops
from benchmarks.reference import OfficialReference, ReferenceBackend
from benchmarks.suite import _synthetic_batch
from langbridge.training.data import Example

TEXTS = ["Janet has 16 eggs and sells 3 of them every day.", "What is 2 plus 3?"]
TARGETS = ["She sells 13 eggs. The answer is 13.", "The answer is 5."]


@pytest.mark.parametrize("freeze_encoder", [True, False])
def test_flop_formula_matches_flop_counter(tiny_langbridge, freeze_encoder):
    """Linear-layer FLOPs of a real forward + backward, counted by torch, equal the formula's (without the
    attention terms, which torch does not count for the CPU SDPA kernel, and with logits at every position,
    which is what the forward computes)."""
    model, processor = tiny_langbridge("bert", "llama", freeze_encoder=freeze_encoder)
    batch = _synthetic_batch(processor, model, 2, 7, 5, torch.Generator().manual_seed(0))
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    counted = sum(
        v for k, v in counter.get_flop_counts()["Global"].items() if str(k) in ("aten.mm", "aten.addmm")
    )
    expected = training_flops(
        train_shape(model), *batch_lengths(batch), attention=False, head_everywhere=True
    )
    assert counted == expected
    # The MFU numerator counts attention and only the useful logits.
    useful = training_flops(train_shape(model), *batch_lengths(batch))
    assert useful != expected


def test_flop_formula_terms():
    from benchmarks.flops import StackShape, TrainShape

    shape = TrainShape(StackShape(10, 2, 4), StackShape(20, 3, 8), 6, 100, encoder_trainable=False)
    # encoder 2*10*n_e + 4*2*4*n_e^2 ; bridge 4*6*n_e ; LM 4*20*n_l + 6*3*8*n_l*(n_l+1) ; head 4*100*t
    n_e, n_l, t = 3, 9, 4
    expected = 2 * 10 * 3 + 32 * 9 + 4 * 6 * 3 + 4 * 20 * 9 + 144 * 9 * 10 + 400 * 4
    assert training_flops(shape, [n_e], [n_l], [t]) == expected
    trained = TrainShape(StackShape(10, 2, 4), StackShape(20, 3, 8), 6, 100, encoder_trainable=True)
    assert training_flops(trained, [n_e], [n_l], [t]) - expected == 2 * (2 * 10 * 3 + 32 * 9) + 2 * 6 * 3


def _examples() -> list[Example]:
    return [Example(t, y) for t, y in zip(TEXTS, TARGETS, strict=True)]


def test_reference_loss_equals_ours_for_one_example(tiny_langbridge):
    model, processor = tiny_langbridge("bert", "llama")
    ref = OfficialReference(model, processor)
    for ex in _examples():
        ours = model(**processor([ex.encoder_text], targets=[ex.target], padding_side="right")).loss
        theirs, _ = ref.loss(ref.collate([ex]))
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_reference_keeps_padding_holes(tiny_langbridge):
    """In a batch, the shorter input's padded encoder slots stay in its sequence and shift its positions, so its
    logits change with the batch (the official behaviour); ours do not."""
    model, processor = tiny_langbridge("bert", "llama")
    ref = OfficialReference(model, processor)
    examples = _examples()
    batch = ref.collate(examples)
    assert bool((batch["enc_mask"] == 0).any())
    short = int(batch["enc_mask"].sum(dim=1).argmin())
    _, logits_batched = ref.loss(batch)
    _, logits_alone = ref.loss(ref.collate([examples[short]]))
    p, s = len(ref.prefix_ids), batch["enc_ids"].shape[1]
    n, w = int(batch["enc_mask"][short].sum()), int(batch["attention_mask"][short].sum())
    batched_text = logits_batched[short, p + s + 1 : p + s + 1 + w]
    alone_text = logits_alone[0, p + n + 1 : p + n + 1 + w]
    assert alone_text.shape == batched_text.shape and logits_alone.shape[1] == p + n + 1 + w
    assert not torch.allclose(batched_text, alone_text, atol=1e-4)


def test_reference_generation_matches_ours_at_batch_one(tiny_langbridge):
    model, processor = tiny_langbridge("bert", "llama")
    ref = OfficialReference(model, processor)
    pad = processor.lm_tokenizer.pad_token_id
    for text in TEXTS:
        batch = processor([text], padding_side="left")
        ids = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=pad)
        ours = ids[0, batch["input_ids"].shape[1] :].tolist()
        assert ref.generate_one(text, processor.lm_prompt, 6, min_new_tokens=6) == ours


def test_reference_generation_stops(tiny_langbridge):
    model, processor = tiny_langbridge("bert", "llama")
    ref = OfficialReference(model, processor)
    free = ref.generate_one(TEXTS[0], processor.lm_prompt, 6, min_new_tokens=6)
    stopped = ref.generate_one(TEXTS[0], processor.lm_prompt, 6, eos_ids=[free[2]])
    assert stopped == free[: free.index(free[2]) + 1]
    assert ref.generate_one(TEXTS[0], processor.lm_prompt, 3) == free[:3]
    text = processor.lm_tokenizer.decode(free[1:3])
    by_string = ref.generate_one(TEXTS[0], processor.lm_prompt, 6, stop=[text])
    assert len(by_string) <= 3 and by_string == free[: len(by_string)]


def test_reference_backend_generates_one_by_one_like_ours(tiny_langbridge):
    """The benchmark's evaluation phase times the reference's own per-example loop (not our continuous batching,
    which it inherits the rest from) and compares outputs with ours."""
    from langbridge.evaluation import GenerationRequest, LangBridgeBackend

    model, processor = tiny_langbridge("bert", "llama")
    ref = ReferenceBackend(model, processor, batch_size=4)
    requests = [GenerationRequest(t, t, max_new_tokens=5) for t in TEXTS]
    outputs = ref.generate(requests)
    assert ref.generated_tokens == 10  # both answers ran through OfficialReference.generate_one
    assert outputs == LangBridgeBackend(model, processor, batch_size=4).generate(requests)


def test_thread_choice_reads_current_cpu_use():
    import os

    busy = busy_cores(0.05)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6
    threads, why = choose_threads("auto")
    assert 1 <= threads <= (os.cpu_count() or 1) and why
    assert choose_threads(3) == (3, "requested")


def test_training_phase_reports_mfu_against_the_peak_around_each_step(tmp_path, monkeypatch):
    """One short run of the harness (tiny pair, one step each): every timed step carries the higher of the two peak
    probes around it, and the run reports MFU against those as well as against the run's single highest peak."""
    import json

    from benchmarks import run, suite

    data = require_shared("gsm8k")
    monkeypatch.setattr(suite, "PEAK_PROBE_SECONDS", 0.05)
    measure = suite.measure_machine_peak
    monkeypatch.setattr(suite, "measure_machine_peak", lambda dev, dtype: measure(dev, dtype, seconds=0.1))
    out = tmp_path / "bench.json"
    args = ["--models", "tiny", "--quick", "--phases", "train", "--repeats", "1", "--train-steps", "2"]
    assert run.main([*args, "--data-dir", str(data.parent), "--threads", "1", "--output", str(out)]) == 0
    train = json.loads(out.read_text())["models"]["tiny"]["train"]
    for side in ("ours", "reference"):
        (r,) = train[side]["runs"]
        steps = r["per_step"]
        assert len(steps) == 2 and all(s["peak_flops"] > 0 for s in steps)
        assert r["flops"] == pytest.approx(sum(s["flops"] for s in steps))
        want = r["flops"] / sum(s["seconds"] * s["peak_flops"] for s in steps)
        assert train[side]["mfu_step_peaks"] == pytest.approx(want, rel=1e-3)
        assert 0 < train[side]["mfu_step_peaks"] < 2
