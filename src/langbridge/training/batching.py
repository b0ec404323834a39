"""Training batches: length-grouped deterministic batches (map-style and streaming), the collator, the held-out
batches, and the endless per-rank iterator the recipe reads.

Determinism: the order of batches depends only on (seed, epoch), so a run can resume at (epoch, batch index)
and see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from langbridge.training.config import TrainConfig
from langbridge.training.data import Example, TrainData, token_lengths


def group_batches(
    items: Sequence[Any],
    lengths: Sequence[int],
    batch_size: int,
    mega_batch: int,
    rng: np.random.Generator | None,
) -> list[list[Any]]:
    """Cut `items` (already shuffled) into batches; with `rng`, sort by length inside mega-batches first.

    Sorting inside mega-batches keeps padding small while keeping randomness across mega-batches; the batch
    order is then shuffled, and the longest batch goes first so an out-of-memory error shows up at step 1.
    """
    if rng is None:
        return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    batches, batch_max = [], []
    for s in range(0, len(items), mega_batch):
        order = sorted(range(s, min(s + mega_batch, len(items))), key=lambda j: -lengths[j])
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batches.append([items[j] for j in idx])
            batch_max.append(lengths[idx[0]])
    perm = rng.permutation(len(batches))
    batches = [batches[i] for i in perm]
    batch_max = [batch_max[i] for i in perm]
    longest = int(np.argmax(batch_max)) if batch_max else 0
    if longest:
        batches.insert(0, batches.pop(longest))
    return batches


class EpochBatchSampler:
    """Batch sampler for a map-style dataset: this rank's batches of one epoch, starting at `start`.

    All ranks draw the same global batch list from (seed, epoch) and take every `world`-th batch, so every rank
    gets the same number of batches (a trailing incomplete round is dropped).
    """

    def __init__(
        self,
        indices: Sequence[int],
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        epoch: int,
        *,
        group_by_length: bool = True,
        mega_batch_mult: int = 50,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ):
        rng = np.random.default_rng([seed, epoch])
        perm = [int(indices[i]) for i in rng.permutation(len(indices))]
        lens = [lengths[i] for i in perm]
        batches = group_batches(
            perm, lens, batch_size, batch_size * mega_batch_mult, rng if group_by_length else None
        )
        rounds = len(batches) // world_size
        self.batches = [batches[j * world_size + rank] for j in range(rounds)][start:]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batches_per_epoch(num_examples: int, batch_size: int, world_size: int) -> int:
    """Per-rank batches in one epoch of EpochBatchSampler (independent of length grouping)."""
    return (-(-num_examples // batch_size)) // world_size


def _shuffle_buffer(stream: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    buffer: list[Any] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    order = rng.permutation(len(buffer))
    for j in order:
        yield buffer[j]


class StreamingBatches(IterableDataset):
    """Batches from a stream that need not fit in memory (local files read lazily, or hub streaming).

    Per epoch: a seeded shuffle buffer, then length grouping inside mega-batches, then every `world`-th batch
    for this rank. Resuming skips `start` batches of the epoch (re-reading, but producing identical batches).
    """

    def __init__(
        self,
        make_stream: Callable[[], Iterable[tuple[int, Example]]],
        batch_size: int,
        seed: int,
        *,
        shuffle_buffer: int = 10000,
        group_by_length: bool = True,
        mega_batch_mult: int = 50,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.make_stream = make_stream
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.group_by_length = group_by_length
        self.mega = batch_size * world_size * mega_batch_mult
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[list[Example]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        stream = _shuffle_buffer((ex for _, ex in self.make_stream()), self.shuffle_buffer, rng)
        seen = 0
        chunk: list[Example] = []
        for ex in stream:
            chunk.append(ex)
            if len(chunk) == self.mega:
                yield from self._emit(chunk, rng, seen)
                seen += len(chunk) // self.batch_size // self.world_size
                chunk = []
        if chunk:
            yield from self._emit(chunk, rng, seen)

    def _emit(self, chunk: list[Example], rng: np.random.Generator, seen: int) -> Iterator[list[Example]]:
        lengths = [e.length for e in chunk]
        batches = group_batches(
            chunk, lengths, self.batch_size, self.mega, rng if self.group_by_length else None
        )
        for j in range(len(batches) // self.world_size):
            if seen + j >= self.start:
                yield batches[j * self.world_size + self.rank]


# ----------------------------------------------------------------------------- collation


class Collator:
    """List of Examples -> model batch (right-padded, labels only on target tokens)."""

    def __init__(self, processor: Any, append_eos: bool):
        self.processor = processor
        self.append_eos = append_eos

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            # Truncation to max_encoder_length / max_lm_length is intended here (documented config limits).
            warnings.filterwarnings("ignore", message=r".*exceed.*max_(encoder|lm)_length.*")
            batch = self.processor(
                [e.encoder_text for e in examples],
                lm_prompts=[e.lm_prompt for e in examples],
                targets=[e.target for e in examples],
                append_eos=[self.append_eos if e.append_eos is None else e.append_eos for e in examples],
                padding_side="right",
            )
        return dict(batch)


def count_tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(non-pad encoder + LM tokens, loss tokens) of a batch."""
    tokens = int(batch["attention_mask"].sum()) + int(batch["encoder_attention_mask"].sum())
    targets = int((batch["labels"][:, 1:] != -100).sum())
    return tokens, targets


def eval_batches(
    examples: list[Example], batch_size: int, rank: int, world_size: int
) -> list[tuple[list[Example], bool]]:
    """Fixed, length-sorted eval batches for this rank as (batch, counts). Every rank gets the same number of
    batches (sharded engines need all ranks in every forward); filler batches have counts=False."""
    order = sorted(examples, key=lambda e: -e.length)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rounds = -(-len(batches) // world_size)
    out = []
    for j in range(rounds):
        k = j * world_size + rank
        out.append((batches[k], True) if k < len(batches) else (batches[0], False))
    return out


# ----------------------------------------------------------------------------- data iteration


class BatchIterator:
    """Endless batches for this rank, epoch after epoch, starting at a saved position."""

    def __init__(self, data: TrainData, cfg: TrainConfig, collator: Collator, rank: int, world: int):
        self.data, self.cfg, self.collator, self.rank, self.world = data, cfg, collator, rank, world
        d = cfg.data
        if data.train is not None:
            self.lengths = token_lengths(data.train, collator.processor)
        else:
            assert data.stream is not None
            self.streaming = StreamingBatches(
                data.stream,
                cfg.batch_size,
                cfg.seed,
                shuffle_buffer=d.shuffle_buffer,
                group_by_length=d.group_by_length,
                mega_batch_mult=d.mega_batch_mult,
                rank=rank,
                world_size=world,
            )

    def loader(self, epoch: int, start: int) -> DataLoader:
        d = self.cfg.data
        if self.data.train is not None:
            sampler = EpochBatchSampler(
                self.data.train_indices,
                self.lengths,
                self.cfg.batch_size,
                self.cfg.seed,
                epoch,
                group_by_length=d.group_by_length,
                mega_batch_mult=d.mega_batch_mult,
                rank=self.rank,
                world_size=self.world,
                start=start,
            )
            return DataLoader(
                self.data.train, batch_sampler=sampler, collate_fn=self.collator, num_workers=d.num_workers
            )
        self.streaming.set_position(epoch, start)
        return DataLoader(self.streaming, batch_size=None, collate_fn=self.collator)

    def __call__(self, epoch: int, start: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """Yields (epoch, batches consumed in that epoch, batch)."""
        while True:
            produced = 0
            for batch in self.loader(epoch, start):
                start += 1
                produced += 1
                yield epoch, start, batch
            if produced == 0 and start == 0:
                raise RuntimeError("the training data produced no batches; check data sources and batch_size")
            epoch, start = epoch + 1, 0
