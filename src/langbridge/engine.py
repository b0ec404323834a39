"""The serving engine: requests join and leave one running decode batch (continuous batching) on a background
thread; each request gets its own sampling settings, stop conditions and streaming callbacks. The batch mechanics
(`DecodeBatch`, prefill, stop checks) live in `continuous_batching`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from .continuous_batching import DecodeBatch, select_rows

__all__ = ["EngineRequest", "ContinuousBatchingEngine", "QueueFull", "sample_next_tokens"]


class QueueFull(RuntimeError):
    """`ContinuousBatchingEngine.submit` when `max_queue` requests already wait to join the batch."""


def _ignore(*args: Any) -> None:
    return None


@dataclass(eq=False)
class EngineRequest:
    """One request to a `ContinuousBatchingEngine`: `n` answers (rows) from one prefill of `payload`, so the
    encoder runs once per request. `temperature == 0` is greedy (argmax, as `continuous_greedy`); otherwise each
    step samples with `temperature`/`top_p` from a generator seeded with `seed` (one per request, so a seeded
    request draws the same tokens whichever rows share its batch). Callbacks run on the engine thread and must
    return quickly: `on_token(choice, token id)`, `on_finish(choice, "stop" | "length")` (EOS ids and the token
    that completes a stop string are passed to `on_token` first), `on_error(exception)` (then no more calls).
    `cancel()` drops the request's rows at the next step (a client that disconnected)."""

    payload: Any
    max_new_tokens: int
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    hit_stop: Callable[[list[int]], bool] | None = None
    on_token: Callable[[int, int], None] = _ignore
    on_finish: Callable[[int, str], None] = _ignore
    on_error: Callable[[BaseException], None] = _ignore
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at_step: int = field(
        default=0, init=False, repr=False
    )  # the engine's step count when it was queued

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(eq=False)
class _Row:
    request: EngineRequest
    choice: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)  # the last one is not in the cache yet


def sample_next_tokens(logits: torch.Tensor, rows: Sequence[Any]) -> list[int]:
    """Next token of each row: argmax for greedy rows (`row.generator is None`), else a draw from the
    temperature-scaled distribution cut to its top-p nucleus, with the row's own generator."""
    tokens = logits.argmax(-1).tolist()
    for j, row in enumerate(rows):
        if row is None or row.generator is None:  # None: a free slot of a DecodeBatch
            continue
        request = row.request
        probs = torch.softmax(logits[j].float() / request.temperature, dim=-1)
        if request.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= request.top_p  # keeps at least the top token
            probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
        tokens[j] = int(torch.multinomial(probs, 1, generator=row.generator))
    return tokens


class ContinuousBatchingEngine:
    """One decode loop in a background thread, fed from a queue: `submit` hands it a request at any time; at the
    next join point (as in `continuous_greedy`: when the batch is empty, or enough rows are free) waiting requests
    are prefilled together, their cache is joined to the running one, and they decode with it. A finished or
    cancelled row leaves the batch. Greedy answers do not depend on the other rows (see the module docstring).

    `prefill(payloads)` returns next-token logits, KV cache and attention mask for the payloads, one row each
    (e.g. an evaluation backend's `_prefill`). At most `max_batch` rows decode at once and `max_queue` requests
    wait; `submit` raises `QueueFull` beyond that.

    Arrivals are grouped into one prefill, because each prefill pauses every running row and a prefill of k prompts
    costs much less than k prefills of one (on a CPU, one MGSM question through the default pair: ~230 ms alone,
    ~140 ms each in a group of 8). While rows decode, a request that arrives waits until `join_wait_steps` decoding
    steps have passed since it was queued (or until a quarter of `max_batch` rows wait), and everything queued by
    then joins in one prefill. When the batch runs empty after several requests ended in the same step, their
    clients are likely to send the next ones at once: the first arrival waits up to `gather_s` seconds for as many
    requests as just ended."""

    def __init__(
        self,
        model: Any,
        prefill: Callable[[list[Any]], tuple[torch.Tensor, DynamicCache, torch.Tensor]],
        eos_ids: Sequence[int],
        max_batch: int = 32,
        max_queue: int = 256,
        name: str = "langbridge-engine",
        join_wait_steps: int = 2,
        gather_s: float = 0.05,
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch} and {max_queue}.")
        if join_wait_steps < 0 or gather_s < 0:
            raise ValueError("join_wait_steps and gather_s must be >= 0.")
        self.model = model
        self.prefill = prefill
        self.eos = set(eos_ids)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.name = name
        self._waiting: deque[EngineRequest] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.running_rows = 0
        self.peak_rows = 0  # most rows decoded together so far
        self.steps = 0  # decoding steps (model calls on the running batch), for tests and metrics
        self.prefills = 0
        self.join_wait_steps = join_wait_steps
        self.gather_s = gather_s
        self._expected = (
            0  # requests that ended in the step that emptied the batch: their clients may send more
        )

    # -- public API ------------------------------------------------------------------------------------------
    def start(self) -> ContinuousBatchingEngine:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, request: EngineRequest) -> None:
        if not 1 <= request.n <= self.max_batch:
            raise ValueError(f"n must be between 1 and max_batch={self.max_batch}, got {request.n}.")
        if request.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}.")
        if request.temperature < 0 or not 0 < request.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1].")
        with self._wake:
            if self._thread is None or self._stopping:
                raise RuntimeError("The engine is not running.")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(
                    f"{len(self._waiting)} requests are already waiting (max_queue={self.max_queue})."
                )
            request.queued_at_step = self.steps
            self._waiting.append(request)
            self._wake.notify()

    # -- the loop ----------------------------------------------------------------------------------------------
    def _take(self, running: int) -> list[EngineRequest]:
        """Waiting requests that join now (blocks while nothing runs and nothing waits)."""
        with self._wake:
            while not running and not self._waiting and not self._stopping:
                self._wake.wait()
            if not running and self._expected > 1 and self.gather_s > 0:
                deadline = time.monotonic() + self.gather_s
                while not self._stopping and sum(r.n for r in self._waiting) < self._expected:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
            self._expected = 0
            while self._waiting and self._waiting[0].cancelled.is_set():
                self._waiting.popleft()
            waiting_rows = sum(r.n for r in self._waiting)
            free = self.max_batch - running
            refill_at = max(1, self.max_batch // 4)  # as continuous_greedy: refill in groups
            if not waiting_rows or (running and free < min(refill_at, waiting_rows)):
                return []
            if (
                running
                and waiting_rows < min(refill_at, free)
                and self.steps - self._waiting[0].queued_at_step < self.join_wait_steps
            ):
                return []  # let more arrivals join the same prefill
            taken: list[EngineRequest] = []
            while self._waiting and self._waiting[0].n <= free:
                request = self._waiting.popleft()
                if not request.cancelled.is_set():
                    taken.append(request)
                    free -= request.n
            return taken

    def _run(self) -> None:
        batch = DecodeBatch(self.max_batch)  # slot -> _Row
        while not self._stopping:
            new = self._take(len(batch))
            if self._stopping:
                break
            try:
                with torch.inference_mode():
                    if new:
                        try:
                            fresh = self._join_new(new, batch)
                        except Exception as err:  # a failed prefill fails its requests; the batch goes on
                            for request in new:
                                _call(request, request.on_error, err)
                            continue
                    elif len(batch):
                        tokens = [r.tokens[-1] if r is not None else 0 for r in batch.owners]
                        logits = batch.step(self.model, torch.tensor(tokens, device=batch.mask.device))
                        fresh = batch.live()
                        tokens = sample_next_tokens(logits, batch.owners)
                        for j in fresh:
                            batch.owners[j].tokens.append(tokens[j])
                        self.steps += 1
                        self.peak_rows = max(self.peak_rows, len(batch))
                    else:
                        continue
                    for j in fresh:
                        row = batch.owners[j]
                        _call(row.request, row.request.on_token, row.choice, row.tokens[-1])
                    done = [j for j in batch.live() if self._finished(batch.owners[j])]
                    if done:
                        ended = {id(batch.owners[j].request) for j in done}
                        batch.remove(done)
                        if not len(batch):
                            self._expected = len(ended)
                    self.running_rows = len(batch)
            except Exception as err:  # a failed step fails the requests in it, not the engine
                failed = {id(r.request): r.request for r in batch.owners if r is not None}
                for request in failed.values():
                    _call(request, request.on_error, err)
                batch = DecodeBatch(self.max_batch)
                self.running_rows = 0
        for request in {id(r.request): r.request for r in batch.owners if r is not None}.values():
            _call(request, request.on_error, RuntimeError("The server is shutting down."))
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for request in waiting:
            _call(request, request.on_error, RuntimeError("The server is shutting down."))

    def _join_new(self, new: list[EngineRequest], batch: DecodeBatch) -> list[int]:
        """Prefill the new requests and add their rows to the batch; returns their slots."""
        logits, new_cache, new_mask = self.prefill([r.payload for r in new])
        self.prefills += 1
        expand = [i for i, r in enumerate(new) for _ in range(r.n)]
        if len(expand) != len(new):  # n > 1: copies of a prefilled row share its encoder pass
            logits = logits[torch.tensor(expand, device=logits.device)]
            new_cache, new_mask = select_rows(new_cache, new_mask, expand)
        fresh = []
        for request in new:
            generator = None
            if request.temperature > 0:
                generator = torch.Generator(device=logits.device)
                generator.manual_seed(request.seed if request.seed is not None else random.getrandbits(63))
            fresh += [_Row(request, c, generator) for c in range(request.n)]
        for row, token in zip(fresh, sample_next_tokens(logits, fresh), strict=True):
            row.tokens.append(token)
        return batch.add(fresh, new_cache, new_mask)

    def _finished(self, row: _Row) -> bool:
        request = row.request
        if request.cancelled.is_set():
            return True
        reason = None
        if row.tokens[-1] in self.eos:
            reason = "stop"
        elif request.hit_stop is not None and request.hit_stop(row.tokens):
            reason = "stop"
        elif len(row.tokens) >= request.max_new_tokens:
            reason = "length"
        if reason is None:
            return False
        _call(request, request.on_finish, row.choice, reason)
        return True


def _call(request: EngineRequest, callback: Callable[..., None], *args: Any) -> None:
    """Run a request's callback; one that raises cancels its request instead of stopping the engine."""
    try:
        callback(*args)
    except Exception:
        request.cancel()
