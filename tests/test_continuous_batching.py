"""Continuous batching: the same greedy outputs as `generate` one request at a time, with rows leaving the batch
as they finish and queued prompts joining it; models whose cache cannot be joined fall back to `generate`."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig

from langbridge.continuous_batching import (
    continuous_greedy,
    prefill_batch,
    supports_continuous_batching,
)
from langbridge.evaluation import CausalLMBackend, GenerationRequest, LangBridgeBackend
from langbridge.evaluation.scoring import truncate_at_stop

TEXTS = [
    "What is 2 plus 3?",
    "Janet has 16 eggs and sells 3 of them every day at the market for two dollars each.",
    "Swali: Janet?",
    "Roger has 5 tennis balls. He buys 2 more cans of 3 balls each. How many balls does he have now?",
    "ジャネットのアヒルは1日に16個の卵を産みます。",
    "x",
    "A robe takes 2 bolts of blue fiber and half that much white fiber.",
]


def _backends(tiny_langbridge, tiny_dirs, continuous: bool, batch_size: int) -> list:
    backends = []
    for encoder, lm in (("bert", "llama"), ("mt5", "gpt2")):
        model, processor = tiny_langbridge(encoder, lm)
        backends.append(
            LangBridgeBackend(model, processor, batch_size=batch_size, continuous_batching=continuous)
        )
    for lm in ("llama", "gpt2"):
        backends.append(
            CausalLMBackend(
                AutoModelForCausalLM.from_pretrained(tiny_dirs[lm]).eval(),
                AutoTokenizer.from_pretrained(tiny_dirs[lm]),
                batch_size=batch_size,
                continuous_batching=continuous,
            )
        )
    return backends


def test_continuous_batching_matches_generate_one_by_one(tiny_langbridge, tiny_dirs) -> None:
    budgets = [10, 4, 10, 7, 10, 1, 6]  # requests with different budgets share the running batch
    requests = [GenerationRequest(t, t, max_new_tokens=b) for t, b in zip(TEXTS, budgets, strict=True)]
    continuous = _backends(tiny_langbridge, tiny_dirs, continuous=True, batch_size=3)
    one_by_one = _backends(tiny_langbridge, tiny_dirs, continuous=False, batch_size=1)
    for fast, slow in zip(continuous, one_by_one, strict=True):
        assert fast.continuous_batching and not slow.continuous_batching
        # An EOS id that some answers produce early makes rows finish at different steps, so the batch shrinks
        # and refills: take the third token of one answer as an extra EOS id.
        ids = fast._lm_tokenizer(fast.generate(requests)[0], add_special_tokens=False)["input_ids"]
        fast._eos = slow._eos = [*slow._eos, ids[2]]
        expected = [slow.generate([r])[0] for r in requests]
        assert fast.generate(requests) == expected
        assert len({len(e) for e in expected}) > 2  # answers did end at different lengths
        # A stop string ends an answer at its first occurrence in the answer; rows with and without stop strings
        # share the batch. (`generate`'s stop strings can also match across the end of the prompt, which would
        # cut "?" + "?" after a question for the stop "??"; so compare with cutting the full answers.)
        stop = expected[0][2:4]
        stopped = [
            GenerationRequest(
                r.encoder_text, r.full_prompt, max_new_tokens=r.max_new_tokens, stop=(stop,) * (i % 2)
            )
            for i, r in enumerate(requests)
        ]
        assert fast.generate(stopped) == [
            truncate_at_stop(e, r.stop) for e, r in zip(expected, stopped, strict=True)
        ]


def test_stop_strings_late_in_long_answers(tiny_langbridge, tiny_dirs) -> None:
    # Only the tail of an answer is decoded to look for a new stop string; one that appears late must still end it.
    backend = _backends(tiny_langbridge, tiny_dirs, continuous=True, batch_size=3)[0]
    requests = [GenerationRequest(t, t, max_new_tokens=40) for t in TEXTS[:3]]
    full = backend.generate(requests)
    stop = full[1][-8:-5]
    assert full[1].find(stop) > 10
    stopped = [
        GenerationRequest(r.encoder_text, r.full_prompt, max_new_tokens=40, stop=(stop,)) for r in requests
    ]
    assert backend.generate(stopped) == [truncate_at_stop(f, [stop]) for f in full]


class _CountingLM(torch.nn.Module):
    """Wraps a causal LM and records (rows, new tokens) of every forward call."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm
        self.calls: list[tuple[int, int]] = []

    def forward(self, input_ids: torch.Tensor, **kwargs):
        self.calls.append(tuple(input_ids.shape))
        return self.lm(input_ids=input_ids, **kwargs)


def test_finished_rows_leave_and_queued_prompts_join(tiny_dirs) -> None:
    lm = _CountingLM(AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval())
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    prompts = [tok(t)["input_ids"] for t in TEXTS]

    def prefill(idx: list[int]):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        return prefill_batch(lm, {"input_ids": ids, "attention_mask": mask})

    def run(batch_size: int, eos: list[int]) -> dict[int, list[int]]:
        with torch.no_grad():
            return dict(continuous_greedy(lm, prefill, [12] * len(TEXTS), batch_size, eos))

    free = run(4, [])
    assert sorted(free) == list(range(len(TEXTS))) and all(len(a) == 12 for a in free.values())
    eos = [free[1][3], free[4][6]]  # tokens some answers produce mid-way
    alone = {i: run(1, eos)[i] for i in range(len(TEXTS))}
    lm.calls.clear()
    together = run(4, eos)
    assert together == alone
    assert len({len(a) for a in together.values()}) > 1
    for answer in together.values():  # each ends at its first EOS, or at the budget
        assert all(t not in eos for t in answer[:-1]) and (answer[-1] in eos or len(answer) == 12)
    prefills = [rows for rows, width in lm.calls if width > 1]
    steps = [rows for rows, width in lm.calls if width == 1]
    assert max(rows for rows, _ in lm.calls) <= 4
    assert len(prefills) > 1  # queued prompts joined a running batch
    # A finished row's slot decodes along (outputs ignored) until a joining row takes it or free slots outnumber
    # live rows, when the batch is rebuilt smaller.
    useful = sum(len(a) - 1 for a in together.values())
    assert min(steps) < 4 and useful <= sum(steps) <= 2 * useful


def test_models_with_sliding_window_caches_use_generate(tiny_langbridge) -> None:
    model, processor = tiny_langbridge("bert", "llama")
    assert supports_continuous_batching(model.lm)
    tiny = dict(
        num_hidden_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2, vocab_size=64
    )
    assert supports_continuous_batching(AutoModelForCausalLM.from_config(LlamaConfig(**tiny)))
    mistral = AutoModelForCausalLM.from_config(MistralConfig(sliding_window=16, **tiny))
    assert not supports_continuous_batching(mistral)
    model.lm = mistral
    assert not LangBridgeBackend(model, processor).continuous_batching  # falls back to `generate`


def test_continuous_greedy_rejects_bad_settings(tiny_dirs) -> None:
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    with pytest.raises(ValueError, match="batch_size and max_new_tokens must be >= 1"):
        next(continuous_greedy(lm, lambda idx: None, [8], 0, []))


def test_growing_cache_layer_matches_concatenation():
    """GrowingLayer holds what DynamicLayer's concatenation holds, writes later steps in place, and restarts its
    buffers when its tensors are replaced (row selection) but keeps writing after a crop."""
    from transformers.cache_utils import DynamicLayer

    from langbridge.continuous_batching import GrowingLayer, growing_cache

    g = torch.Generator().manual_seed(0)
    ours, ref = GrowingLayer(), DynamicLayer()
    steps = [torch.randn(3, 2, n, 4, generator=g) for n in (5, 1, 1, 70, 1)]
    pointers = []
    for kv in steps:
        k, v = ours.update(kv, kv * 2)
        rk, rv = ref.update(kv, kv * 2)
        assert torch.equal(k, rk) and torch.equal(v, rv) and ours.get_seq_length() == ref.get_seq_length()
        pointers.append(k.data_ptr())
    assert pointers[0] == pointers[1] == pointers[2]  # single tokens go into the room left after the prompt
    assert pointers[3] != pointers[2] and pointers[4] == pointers[3]  # 70 new ones did not fit: new buffers
    ours.crop(-3)
    ref.crop(-3)
    assert torch.equal(ours.update(steps[1], steps[1])[0], ref.update(steps[1], steps[1])[0])
    ours.batch_select_indices(torch.tensor([0, 2]))
    ref.batch_select_indices(torch.tensor([0, 2]))
    one = torch.randn(2, 2, 1, 4, generator=g)
    assert torch.equal(ours.update(one, one)[0], ref.update(one, one)[0])
    cache = growing_cache([(steps[0], steps[0])])
    assert isinstance(cache.layers[0], GrowingLayer) and cache.get_seq_length() == 5
    assert growing_cache().get_seq_length() == 0


def _llama_and_prompts(tiny_dirs):
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    return lm, [tok(t)["input_ids"] for t in TEXTS]


def _prefill_ids(lm, prompts: list[list[int]]):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return prefill_batch(lm, {"input_ids": ids, "attention_mask": mask})


def _alone(lm, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens of one unpadded prompt, with the LM's own cache (no EOS: the engines here run without)."""
    with torch.no_grad():
        out = lm(input_ids=torch.tensor([prompt]), use_cache=True)
        tokens = [int(out.logits[0, -1].argmax())]
        while len(tokens) < n:
            out = lm(input_ids=torch.tensor([[tokens[-1]]]), cache=out.cache, use_cache=True)
            tokens.append(int(out.logits[0, -1].argmax()))
    return tokens


def test_decode_batch_slots_joins_and_rebuilds_keep_each_row_exact(tiny_dirs) -> None:
    """Rows join into freed slots without copying the running cache, a joining prompt wider than the batch and
    free slots outnumbering live rows rebuild it; through all of it each row decodes what it decodes alone."""
    from langbridge.continuous_batching import DecodeBatch, SlotLayer

    lm, prompts = _llama_and_prompts(tiny_dirs)
    # Longest first, as evaluation orders them, so that later joins fit the batch's width; then one wider prompt.
    every = sorted(prompts, key=len, reverse=True)
    every.append(every[0] * 2)
    answers: dict[int, list[int]] = {}
    batch = DecodeBatch(4)

    def join(owners: list[int]) -> list[int]:
        logits, cache, mask = _prefill_ids(lm, [every[i] for i in owners])
        for i, t in zip(owners, logits.argmax(-1).tolist(), strict=True):
            answers[i] = [t]
        return batch.add(owners, cache, mask)

    def steps(n: int) -> None:
        for _ in range(n):
            tokens = [answers[i][-1] if i is not None else 0 for i in batch.owners]
            logits = batch.step(lm, torch.tensor(tokens))
            for j in batch.live():
                answers[batch.owners[j]].append(int(logits[j].argmax()))

    with torch.no_grad():
        assert join([0, 1, 2]) == [0, 1, 2] and batch.rebuilds == 1
        assert isinstance(batch.cache.layers[0], SlotLayer)
        steps(3)
        batch.remove([1])  # one free slot, two live rows: kept
        assert batch.slots == 3 and len(batch) == 2 and batch.rebuilds == 1
        steps(2)  # the free slot decodes along
        assert join([3, 4]) == [1, 3] and batch.rebuilds == 1  # the freed slot, then a new one: no copy
        steps(4)
        batch.remove([0, 2])
        assert batch.slots == 4 and batch.rebuilds == 1  # two free, two live
        assert join([7]) == [2] and batch.rebuilds == 2  # wider than the batch: rebuilt, free slots dropped
        assert batch.slots == 3 and batch.owners == [3, 4, 7]
        steps(70)  # past the room the rebuild left: the buffers grow
        batch.remove([0, 1])  # two free slots, one live row: rebuilt without them
        assert batch.rebuilds == 3 and batch.owners == [7]
        assert join([5, 6]) == [1, 2] and batch.rebuilds == 3
        steps(2)
        batch.remove([0, 1, 2])
        assert batch.cache is None and len(batch) == 0
        for i, answer in answers.items():
            assert answer == _alone(lm, every[i], len(answer)), i


def test_engine_groups_arrivals_into_one_prefill_mid_decode(tiny_dirs) -> None:
    """Requests that arrive while a batch decodes are prefilled together (one prefill for all of them), join the
    running batch mid-decode, and every answer is what it is alone."""
    import threading

    from langbridge.engine import ContinuousBatchingEngine, EngineRequest

    lm, prompts = _llama_and_prompts(tiny_dirs)
    engine = ContinuousBatchingEngine(
        lm, lambda idx: _prefill_ids(lm, [prompts[i] for i in idx]), [], max_batch=16, join_wait_steps=10**6
    ).start()
    results = {i: [] for i in range(5)}
    ended = threading.Semaphore(0)
    # Request 0's callback holds the engine thread at its 3rd and 12th tokens until the test lets it go on.
    hold = {3: (threading.Event(), threading.Event()), 12: (threading.Event(), threading.Event())}

    def token(i: int, t: int) -> None:
        results[i].append(t)
        if i == 0 and len(results[0]) in hold:
            reached, go_on = hold[len(results[0])]
            reached.set()
            go_on.wait(120)

    def request(i: int, budget: int) -> EngineRequest:
        return EngineRequest(
            i, budget, on_token=lambda c, t: token(i, t), on_finish=lambda c, reason: ended.release()
        )

    try:
        engine.submit(request(0, 60))
        assert hold[3][0].wait(120)
        # Three waiting rows stay queued (fewer than a quarter of max_batch; join_wait_steps is huge) ...
        for i, budget in zip((1, 2, 3), (5, 9, 12), strict=True):
            engine.submit(request(i, budget))
        hold[3][1].set()
        assert hold[12][0].wait(120)
        assert engine.waiting == 3 and engine.prefills == 1 and engine.steps >= 9
        # ... and a fourth makes a group of max_batch // 4: one prefill for the four, mid-decode
        engine.submit(request(4, 7))
        hold[12][1].set()
        for _ in range(5):
            assert ended.acquire(timeout=120)
        assert engine.prefills == 2 and engine.peak_rows == 5
        for i, budget in enumerate((60, 5, 9, 12, 7)):
            assert results[i] == _alone(lm, prompts[i], budget), i
    finally:
        engine.stop()


def test_auto_batch_size_from_memory(tiny_dirs) -> None:
    from langbridge.continuous_batching import auto_batch_size, kv_bytes_per_token

    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    c = lm.config
    per_token = kv_bytes_per_token(lm)
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    assert per_token == c.num_hidden_layers * 2 * heads * (c.hidden_size // c.num_attention_heads) * 4
    row = 2 * per_token * 100  # 100 positions with room to grow
    assert auto_batch_size(lm, 100, available_bytes=4 * 20 * row) == 20
    assert auto_batch_size(lm, 100, available_bytes=4 * 2 * row) == 8  # never below 8
    assert auto_batch_size(lm, 100, available_bytes=4 * 1000 * row) == 64  # nor above 64
    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    assert kv_bytes_per_token(gpt2) == gpt2.config.n_layer * 2 * gpt2.config.n_embd * 4


def test_engine_gathers_the_next_requests_after_the_batch_empties(tiny_dirs) -> None:
    """When several requests end in the step that empties the batch, the first new arrival waits (up to gather_s)
    for as many requests, and they share one prefill."""
    import threading

    from langbridge.engine import ContinuousBatchingEngine, EngineRequest

    lm, prompts = _llama_and_prompts(tiny_dirs)
    gate = threading.Event()

    def prefill(idx: list[int]):
        if idx == [-1]:  # the blocker: holds the engine until requests 0-2 are queued
            gate.wait(120)
            idx = [6]
        return _prefill_ids(lm, [prompts[i] for i in idx])

    engine = ContinuousBatchingEngine(lm, prefill, [], max_batch=8, join_wait_steps=0, gather_s=120).start()
    results: dict[int, list[int]] = {i: [] for i in range(-1, 6)}
    ended = threading.Semaphore(0)

    def request(i: int, budget: int) -> EngineRequest:
        return EngineRequest(
            i,
            budget,
            on_token=lambda c, t: results[i].append(t),
            on_finish=lambda c, reason: ended.release(),
        )

    try:
        engine.submit(request(-1, 1))
        deadline = time.monotonic() + 120
        while engine.waiting and time.monotonic() < deadline:  # taken: its prefill holds the engine
            time.sleep(0.01)
        for i in range(3):
            engine.submit(request(i, 4))
        gate.set()
        for _ in range(4):  # the blocker, then 0-2 together: they end in the same step
            assert ended.acquire(timeout=120)
        assert engine.prefills == 2
        engine.submit(request(3, 3))
        time.sleep(0.2)
        assert engine.prefills == 2 and engine.waiting == 1  # waits for the two others
        engine.submit(request(4, 5))
        engine.submit(request(5, 6))
        for _ in range(3):
            assert ended.acquire(timeout=120)
        assert engine.prefills == 3
        for i, budget in enumerate((4, 4, 4, 3, 5, 6)):
            assert results[i] == _alone(lm, prompts[i], budget), i
    finally:
        engine.stop()
