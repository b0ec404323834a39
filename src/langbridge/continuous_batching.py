"""Continuous batching for greedy decoding (evaluation, `langbridge generate`): a finished answer leaves the batch and
the next prompt takes its place.

`generate` keeps every row of a batch until its longest answer ends, so short answers wait for the long one (MGSM
answers average ~50 tokens against a 128-token budget) and each decoding step pays for finished rows. Here a step
decodes only unfinished rows; once a quarter of the batch has finished, the next prompts are prefilled and their KV
cache is joined to the running one, left-padded to a common width. Padded cache slots are masked and take no
position ids (positions count attended tokens), so an answer does not depend on which rows share its batch.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

__all__ = [
    "supports_continuous_batching",
    "forward_next_token_logits",
    "prefill_batch",
    "decode_step",
    "continuous_greedy",
    "eos_token_ids",
    "stop_string_checker",
    "EngineRequest",
    "ContinuousBatchingEngine",
    "QueueFull",
    "sample_next_tokens",
]

# prefill(request indices) -> (next-token logits [k, V], KV cache, attention mask [k, L])
Prefill = Callable[[list[int]], tuple[torch.Tensor, DynamicCache, torch.Tensor]]


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that writes each step's keys and values into spare room at the end of its buffers instead of
    concatenating the whole cache again: a decoding step then copies one position per row, not the full cache (13%
    faster batch-32 decoding steps for SmolLM2-135M on CPU). `keys`/`values` are views of the filled part; if
    something replaces them (a crop keeps the view, a row selection does not), the next update starts new buffers."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._key_buffer = self._value_buffer = None
        filled, new = (self.keys.shape[-2] if self.keys.numel() else 0), key_states.shape[-2]
        buffer = self._key_buffer
        in_place = (
            buffer is not None
            and self.keys.data_ptr() == buffer.data_ptr()
            and self.keys.shape[:2] == buffer.shape[:2]
            and filled + new <= buffer.shape[-2]
        )
        if not in_place:
            room = filled + new + max(64, (filled + new) // 2)
            batch, heads, _, dim = key_states.shape
            self._key_buffer = key_states.new_empty(batch, heads, room, dim)
            self._value_buffer = value_states.new_empty(batch, heads, room, value_states.shape[-1])
            if filled:
                self._key_buffer[:, :, :filled] = self.keys
                self._value_buffer[:, :, :filled] = self.values
        self._key_buffer[:, :, filled : filled + new] = key_states
        self._value_buffer[:, :, filled : filled + new] = value_states
        self.keys = self._key_buffer[:, :, : filled + new]
        self.values = self._value_buffer[:, :, : filled + new]
        return self.keys, self.values


def growing_cache(keys_and_values: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> DynamicCache:
    """A DynamicCache of GrowingLayers, empty (layers appear as the model fills them) or holding the given tensors."""
    cache = DynamicCache.__new__(DynamicCache)
    if not keys_and_values:
        Cache.__init__(cache, layer_class_to_replicate=GrowingLayer)
        return cache
    layers = []
    for keys, values in keys_and_values:
        layers.append(GrowingLayer())
        layers[-1].update(keys, values)
    Cache.__init__(cache, layers=layers)
    return cache


def supports_continuous_batching(lm: Any) -> bool:
    """Whether the causal LM takes a plain full-attention KV cache whose rows can be dropped and joined (and the
    arguments a decoding step passes). Sliding-window, recurrent, encoder-decoder and older remote-code models keep
    using `generate`."""
    config = lm.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    if not {"cache", "position_ids", "logits_to_keep"} <= set(inspect.signature(lm.forward).parameters):
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # a config DynamicCache cannot describe: leave it to `generate`
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def eos_token_ids(lm: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the LM's generation config (instruct LMs often end turns with their own token) and tokenizer."""
    ids: list[int] = []
    config = getattr(lm, "generation_config", None)
    value = getattr(config, "eos_token_id", None) if config is not None else None
    for v in value if isinstance(value, list | tuple) else [value]:
        if v is not None and v not in ids:
            ids.append(int(v))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def stop_string_checker(tokenizer: Any, stops: Sequence[Sequence[str]]) -> Callable[[int, list[int]], bool]:
    """`hit_stop` for `continuous_greedy`: whether answer i (token ids so far) contains one of `stops[i]`."""

    strings = [[s for s in request_stops if s] for request_stops in stops]
    # Checked after every token, so a new occurrence ends in the last token: decoding a tail that can hold the
    # longest stop string (a character is at most 4 byte tokens) keeps the check cheap for long answers.
    windows = [4 * max((len(s) for s in request_strings), default=0) + 2 for request_strings in strings]

    def hit_stop(i: int, ids: list[int]) -> bool:
        if not strings[i]:
            return False
        text = tokenizer.decode(ids[-windows[i] :], skip_special_tokens=True)
        return any(s in text for s in strings[i])

    return hit_stop


def forward_next_token_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: DynamicCache | None = None,
    **inputs: Any,
) -> tuple[torch.Tensor, DynamicCache]:
    """One forward pass that returns the logits of the next token and the updated cache. Position ids come from the
    attention mask, so left padding (of the prompt or of a joined cache) does not shift an example."""
    width = input_ids.shape[1]
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -width:]
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        **inputs,
    )
    return out.logits[:, -1].float(), out.cache


def decode_step(
    model: Any, tokens: torch.Tensor, cache: DynamicCache, mask: torch.Tensor
) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
    """One greedy decoding step of the running batch: `tokens` [B] (each row's last token, not yet in the cache)
    -> (next tokens [B], cache, attention mask one column wider)."""
    mask = torch.cat([mask, mask.new_ones(len(tokens), 1)], dim=1)
    logits, cache = forward_next_token_logits(model, tokens.unsqueeze(1), mask, cache)
    return logits.argmax(-1), cache, mask


def prefill_batch(
    model: Any, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
    """A `Prefill` result for a left-padded batch (a processor's or tokenizer's output, `input_ids` and
    `attention_mask` plus any other model inputs): next-token logits, KV cache and attention mask."""
    inputs = dict(batch)
    input_ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    logits, cache = forward_next_token_logits(model, input_ids, mask, growing_cache(), **inputs)
    return logits, cache, mask


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _join(
    cache: DynamicCache, mask: torch.Tensor, other: DynamicCache, other_mask: torch.Tensor
) -> tuple[DynamicCache, torch.Tensor]:
    """Stack two caches along the batch, each left-padded to the wider one."""
    width = max(mask.shape[1], other_mask.shape[1])
    layers = [
        (
            torch.cat([_left_pad(a.keys, width, -2), _left_pad(b.keys, width, -2)]),
            torch.cat([_left_pad(a.values, width, -2), _left_pad(b.values, width, -2)]),
        )
        for a, b in zip(cache.layers, other.layers, strict=True)
    ]
    joined = torch.cat([_left_pad(mask, width, 1), _left_pad(other_mask, width, 1)])
    return growing_cache(layers), joined


def _select(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """Keep only the rows `keep`, and drop leading cache columns that none of them attends to."""
    index = torch.tensor(keep, device=mask.device)
    mask = mask[index]
    start = int((mask.sum(0) > 0).nonzero()[0])
    layers = [(layer.keys[index, :, start:], layer.values[index, :, start:]) for layer in cache.layers]
    return growing_cache(layers), mask[:, start:]


def continuous_greedy(
    model: Any,
    prefill: Prefill,
    max_new_tokens: Sequence[int],
    batch_size: int,
    eos_ids: Sequence[int],
    hit_stop: Callable[[int, list[int]], bool] | None = None,
) -> Iterator[tuple[int, list[int]]]:
    """Greedy decoding of requests 0..len(max_new_tokens)-1 with at most `batch_size` rows at a time: `prefill` runs
    them, in that order, a group at a time, and `model` then decodes from the cache one token per step. Yields
    (request index, generated token ids) as each answer ends: at an EOS id (kept, as `generate` keeps it), after
    its `max_new_tokens[i]`, or when `hit_stop(i, ids)` says one of its stop strings has appeared. Requests may
    differ in budget and stop strings (MGSM's stop strings are in each question's language)."""
    if batch_size < 1 or min(max_new_tokens, default=1) < 1:
        raise ValueError(
            f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {min(max_new_tokens, default=1)}."
        )
    eos = set(eos_ids)
    queue = deque(range(len(max_new_tokens)))
    refill_at = max(1, batch_size // 4)  # a prefill call has a fixed cost: refill in groups, not row by row
    rows: list[int] = []  # the request index of each running row
    answers: list[list[int]] = []  # its tokens so far; the last one is not in the cache yet
    cache: DynamicCache | None = None
    mask: torch.Tensor | None = None
    while queue or rows:
        free = batch_size - len(rows)
        if queue and (not rows or free >= min(refill_at, len(queue))):
            new = [queue.popleft() for _ in range(min(free, len(queue)))]
            logits, new_cache, new_mask = prefill(new)
            if cache is None:
                cache, mask = new_cache, new_mask
            else:
                cache, mask = _join(cache, mask, new_cache, new_mask)
            rows += new
            answers += [[t] for t in logits.argmax(-1).tolist()]
            fresh = range(len(rows) - len(new), len(rows))
        else:
            tokens = torch.tensor([a[-1] for a in answers], device=mask.device).unsqueeze(1)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            logits, cache = forward_next_token_logits(model, tokens, mask, cache)
            for answer, token in zip(answers, logits.argmax(-1).tolist(), strict=True):
                answer.append(token)
            fresh = range(len(rows))
        done = {
            j
            for j in fresh
            if answers[j][-1] in eos
            or len(answers[j]) >= max_new_tokens[rows[j]]
            or (hit_stop is not None and hit_stop(rows[j], answers[j]))
        }
        if not done:
            continue
        for j in sorted(done):
            yield rows[j], answers[j]
        keep = [j for j in range(len(rows)) if j not in done]
        rows = [rows[j] for j in keep]
        answers = [answers[j] for j in keep]
        if keep:
            cache, mask = _select(cache, mask, keep)
        else:
            cache = mask = None


# ----------------------------------------------------------------------------------------------------------------
# A long-running engine for serving: requests arrive while others decode.


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
        if row.generator is None:
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
    wait; `submit` raises `QueueFull` beyond that."""

    def __init__(
        self,
        model: Any,
        prefill: Callable[[list[Any]], tuple[torch.Tensor, DynamicCache, torch.Tensor]],
        eos_ids: Sequence[int],
        max_batch: int = 32,
        max_queue: int = 256,
        name: str = "langbridge-engine",
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1, got {max_batch} and {max_queue}.")
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
            self._waiting.append(request)
            self._wake.notify()

    # -- the loop ----------------------------------------------------------------------------------------------
    def _take(self, running: int) -> list[EngineRequest]:
        """Waiting requests that join now (blocks while nothing runs and nothing waits)."""
        with self._wake:
            while not running and not self._waiting and not self._stopping:
                self._wake.wait()
            while self._waiting and self._waiting[0].cancelled.is_set():
                self._waiting.popleft()
            waiting_rows = sum(r.n for r in self._waiting)
            free = self.max_batch - running
            refill_at = max(1, self.max_batch // 4)  # as continuous_greedy: refill in groups
            if not waiting_rows or (running and free < min(refill_at, waiting_rows)):
                return []
            taken: list[EngineRequest] = []
            while self._waiting and self._waiting[0].n <= free:
                request = self._waiting.popleft()
                if not request.cancelled.is_set():
                    taken.append(request)
                    free -= request.n
            return taken

    def _run(self) -> None:
        rows: list[_Row] = []
        cache: DynamicCache | None = None
        mask: torch.Tensor | None = None
        while not self._stopping:
            new = self._take(len(rows))
            if self._stopping:
                break
            try:
                with torch.inference_mode():
                    if new:
                        try:
                            rows, cache, mask, fresh = self._join_new(new, rows, cache, mask)
                        except Exception as err:  # a failed prefill fails its requests; the batch goes on
                            for request in new:
                                _call(request, request.on_error, err)
                            continue
                    elif rows:
                        tokens = torch.tensor([r.tokens[-1] for r in rows], device=mask.device).unsqueeze(1)
                        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
                        logits, cache = forward_next_token_logits(self.model, tokens, mask, cache)
                        for row, token in zip(rows, sample_next_tokens(logits, rows), strict=True):
                            row.tokens.append(token)
                        self.steps += 1
                        self.peak_rows = max(self.peak_rows, len(rows))
                        fresh = rows
                    else:
                        continue
                    for row in fresh:
                        _call(row.request, row.request.on_token, row.choice, row.tokens[-1])
                    keep = [j for j, row in enumerate(rows) if not self._finished(row)]
                    if len(keep) < len(rows):
                        rows = [rows[j] for j in keep]
                        cache, mask = _select(cache, mask, keep) if keep else (None, None)
                    self.running_rows = len(rows)
            except Exception as err:  # a failed step fails the requests in it, not the engine
                failed = {id(r.request): r.request for r in rows}
                for request in failed.values():
                    _call(request, request.on_error, err)
                rows, cache, mask = [], None, None
                self.running_rows = 0
        for request in {id(r.request): r.request for r in rows}.values():
            _call(request, request.on_error, RuntimeError("The server is shutting down."))
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for request in waiting:
            _call(request, request.on_error, RuntimeError("The server is shutting down."))

    def _join_new(
        self,
        new: list[EngineRequest],
        rows: list[_Row],
        cache: DynamicCache | None,
        mask: torch.Tensor | None,
    ) -> tuple[list[_Row], DynamicCache, torch.Tensor, list[_Row]]:
        logits, new_cache, new_mask = self.prefill([r.payload for r in new])
        self.prefills += 1
        expand = [i for i, r in enumerate(new) for _ in range(r.n)]
        if len(expand) != len(new):  # n > 1: copies of a prefilled row share its encoder pass
            logits = logits[torch.tensor(expand, device=logits.device)]
            new_cache, new_mask = _select(new_cache, new_mask, expand)
        fresh = []
        for request in new:
            generator = None
            if request.temperature > 0:
                generator = torch.Generator(device=logits.device)
                generator.manual_seed(request.seed if request.seed is not None else random.getrandbits(63))
            fresh += [_Row(request, c, generator) for c in range(request.n)]
        for row, token in zip(fresh, sample_next_tokens(logits, fresh), strict=True):
            row.tokens.append(token)
        if cache is None:
            cache, mask = new_cache, new_mask
        else:
            cache, mask = _join(cache, mask, new_cache, new_mask)
        return rows + fresh, cache, mask, fresh

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
