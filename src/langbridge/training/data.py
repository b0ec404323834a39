"""Training data: examples for each mode (labeled; unlabeled documents split at a seeded point; sentence modes:
reconstruction and next_sentence), per-source objectives, the datasets, and `build_data`, which reads the
configured sources (`sources`) into train and held-out examples. Batching and collation are `batching`'s.

Determinism: the split point of an unlabeled document depends only on (seed, document index), so a resumed run
sees exactly the examples an uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from langbridge.training.config import DataConfig, DataSource
from langbridge.training.sources import DataError, describe, iter_records, resolve_data_dir
from langbridge.training.templates import PromptTemplate, get_template

logger = logging.getLogger("langbridge.training")

# Upper bound on characters per token, used only to avoid tokenizing megabytes of a document we will cut anyway.
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class Example:
    encoder_text: str
    target: str
    # Per-example LM prompt and end-of-sequence choice when objectives are mixed; None = the run's default.
    lm_prompt: str | None = None
    append_eos: bool | None = None

    @property
    def length(self) -> int:
        # Characters are a cheap proxy for tokens; only relative order matters for length grouping.
        return len(self.encoder_text) + len(self.target)


# ----------------------------------------------------------------------------- examples


def _field(row: dict, name: str | None, source: DataSource, required: bool) -> str | None:
    if name is None:
        return None
    if name not in row:
        if required:
            raise DataError(
                f"field {name!r} missing in a row of {source.path or source.hub} (fields: {', '.join(map(str, row))}); "
                "map the right column with instruction_field / output_field / text_field"
            )
        return None
    value = row[name]
    return None if value is None else str(value)


def labeled_example(
    row: dict, source: DataSource, template: PromptTemplate, system_prompt: str | None
) -> Example | None:
    instruction = _field(row, source.instruction_field, source, required=True)
    output = _field(row, source.output_field, source, required=True)
    if not instruction or not instruction.strip() or not output or not output.strip():
        return None  # empty rows carry no training signal
    extra = _field(row, source.input_field, source, required=False)
    system = _field(row, source.system_field, source, required=False) or system_prompt
    return Example(template.encoder_text(instruction, extra, system), output, source.lm_prompt)


def document_text(row: dict, source: DataSource) -> str | None:
    text = _field(row, source.text_field, source, required=True)
    if text is None:
        return None
    text = text.strip()
    # A split needs at least two pieces; single words cannot be split into input and continuation.
    return text if len(text.split()) >= 2 else None


# A sentence ends at . ! or ? (optionally closed by a quote or bracket) before whitespace and a capital or digit.
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str, min_words: int = 4, max_chars: int = 400) -> list[str]:
    """English sentences of a document, without headings, fragments or over-long run-ons."""
    out = []
    for line in text.splitlines():
        for sentence in SENTENCE_BOUNDARY.split(line.strip()):
            sentence = sentence.strip()
            if (
                len(sentence.split()) >= min_words
                and len(sentence) <= max_chars
                and sentence[-1] in ".!?\"')"
            ):
                out.append(sentence)
    return out


def reconstruction_examples(text: str, source: DataSource) -> list[Example]:
    """Reconstruction (alignment) mode: the encoder reads an English sentence, the LM learns to write it back."""
    return [Example(s, s, source.lm_prompt, True) for s in split_sentences(text)]


def next_sentence_examples(text: str, source: DataSource) -> list[Example]:
    """Next-sentence mode: the encoder reads an English sentence, the LM learns the sentence that follows it in
    the same document. The paper's unlabeled objective cut at sentence boundaries, so the LM learns to use the
    soft tokens as context to continue from, not only to rewrite."""
    sentences = split_sentences(text)
    return [Example(a, b, source.lm_prompt, False) for a, b in zip(sentences, sentences[1:], strict=False)]


class DocumentSplitter:
    """Splits a document after a random number of encoder tokens: the encoder reads the head, the LM learns the rest.

    The split point k is drawn uniformly from [min_tokens, max_tokens] with an RNG seeded by (seed, index), then
    capped so that the LM keeps at least min(max_lm_length, half the document) tokens to learn from.
    """

    def __init__(
        self, encoder_tokenizer: Any, min_tokens: int, max_tokens: int, max_lm_length: int, seed: int
    ):
        if not getattr(encoder_tokenizer, "is_fast", False):
            raise DataError("unlabeled mode needs a fast (Rust) encoder tokenizer for character offsets")
        self.tokenizer = encoder_tokenizer
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.max_lm_length = max_lm_length
        self.seed = seed
        self.head_chars = MAX_CHARS_PER_TOKEN * (max_tokens + max_lm_length + 1)
        self.tail_chars = MAX_CHARS_PER_TOKEN * (max_lm_length + 1)

    def split_offsets(self, texts: Sequence[str], indices: Sequence[int]) -> list[int]:
        """Character offset of the split point for each text (batched tokenization)."""
        heads = [t[: self.head_chars] for t in texts]
        enc = self.tokenizer(heads, add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for text, index, offsets in zip(texts, indices, enc["offset_mapping"], strict=True):
            # Drop zero-width tokens (e.g. a bare sentencepiece "▁") so every split point moves real characters.
            starts = [s for s, e in offsets if e > s]
            n = (
                len(starts)
                if len(text) <= self.head_chars
                else max(len(starts), self.max_tokens + self.max_lm_length)
            )
            keep = min(self.max_lm_length, n // 2)
            hi = max(1, min(self.max_tokens, n - keep))
            lo = min(self.min_tokens, hi)
            u = np.random.default_rng([self.seed, int(index)]).random()
            k = lo + int(u * (hi - lo + 1))
            k = min(k, hi, len(starts) - 1)
            out.append(starts[k] if k >= 1 else len(text))
        return out

    def make(self, text: str, offset: int, lm_prompt: str | None = None) -> Example:
        return Example(text[:offset], text[offset : offset + self.tail_chars], lm_prompt, False)

    def __call__(self, text: str, index: int) -> Example:
        return self.make(text, self.split_offsets([text], [index])[0])


class LabeledDataset(Dataset):
    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Example:
        return self.examples[i]


class DocumentDataset(Dataset):
    """Unlabeled documents; split points are computed once up front (batched) so lengths are known for grouping."""

    def __init__(
        self, docs: list[str], splitter: DocumentSplitter, chunk: int = 1024, lm_prompt: str | None = None
    ):
        self.docs = docs
        self.splitter = splitter
        self.lm_prompt = lm_prompt
        self.offsets: list[int] = []
        for start in range(0, len(docs), chunk):
            part = docs[start : start + chunk]
            self.offsets.extend(splitter.split_offsets(part, range(start, start + len(part))))

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> Example:
        return self.splitter.make(self.docs[i], self.offsets[i], self.lm_prompt)


class MixedDataset(Dataset):
    """Sources of different modes one after another (index i runs through the first, then the second, ...)."""

    def __init__(self, parts: list[LabeledDataset | DocumentDataset]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> Example:
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[part][i - int(self.starts[part])]


def token_lengths(dataset: LabeledDataset | DocumentDataset, processor: Any, chunk: int = 1024) -> list[int]:
    """Encoder tokens + target tokens of every example, capped at the processor's limits: what length grouping
    sorts by. The LM reads one soft token per encoder token, so this tracks the costly LM length too; characters
    are a poor proxy (one SmolLM2 token per digit in GSM8K answers, several bytes per token in Thai)."""
    out: list[int] = []
    for start in range(0, len(dataset), chunk):
        examples = [dataset[i] for i in range(start, min(start + chunk, len(dataset)))]
        enc = processor.encoder_tokenizer([e.encoder_text for e in examples], add_special_tokens=False)
        tgt = processor.lm_tokenizer([e.target for e in examples], add_special_tokens=False)
        out += [
            min(len(a), processor.max_encoder_length) + min(len(b), processor.max_lm_length)
            for a, b in zip(enc["input_ids"], tgt["input_ids"], strict=True)
        ]
    return out


# ----------------------------------------------------------------------------- building


@dataclass
class TrainData:
    train: LabeledDataset | DocumentDataset | None  # map-style (None when streaming)
    train_indices: list[int]
    stream: Callable[[], Iterable[tuple[int, Example]]] | None  # streaming source (None when map-style)
    eval_examples: list[Example]
    template: PromptTemplate
    append_eos: bool
    sources: list[str]

    @property
    def num_train(self) -> int | None:
        return len(self.train_indices) if self.train is not None else None


SENTENCE_MODES = {"reconstruction": reconstruction_examples, "next_sentence": next_sentence_examples}


def _example_stream(
    sources: list[DataSource],
    cfg: DataConfig,
    data_dir: Path | None,
    template: PromptTemplate,
    splitter: DocumentSplitter | None,
    streaming: bool,
) -> Iterator[tuple[int, Example]]:
    """(global index, Example) over all sources in order; skipped rows do not consume an index."""
    index = 0
    for source in sources:
        mode = source.mode or cfg.mode
        for row in iter_records(source, data_dir, streaming):
            if mode == "labeled":
                found = [labeled_example(row, source, template, cfg.system_prompt)]
            elif mode in SENTENCE_MODES:
                text = document_text(row, source)
                found = [] if text is None else SENTENCE_MODES[mode](text, source)
            else:
                text = document_text(row, source)
                found = [
                    None
                    if text is None
                    else splitter.make(text, splitter.split_offsets([text], [index])[0], source.lm_prompt)
                ]  # type: ignore[union-attr]
            for ex in found:
                if ex is not None:
                    yield index, ex
                    index += 1


def _docs(sources: list[DataSource], data_dir: Path | None) -> list[str]:
    docs = []
    for source in sources:
        for row in iter_records(source, data_dir, streaming=False):
            text = document_text(row, source)
            if text is not None:
                docs.append(text)
    return docs


def build_data(cfg: DataConfig, processor: Any, seed: int) -> TrainData:
    """Read the configured sources and prepare train/eval examples for the configured mode."""
    data_dir = resolve_data_dir(cfg.data_dir)
    template = get_template(cfg.template, cfg.encoder_template, cfg.lm_prompt)
    splitter = None
    if "unlabeled" in {s.mode or cfg.mode for s in [*cfg.train, *cfg.eval]}:
        max_split = cfg.max_split_tokens if cfg.max_split_tokens is not None else cfg.max_encoder_length
        splitter = DocumentSplitter(
            processor.encoder_tokenizer, cfg.min_split_tokens, max_split, cfg.max_lm_length, seed
        )
    sources = [describe(s, data_dir) for s in cfg.train]

    def build_one(source: DataSource) -> LabeledDataset | DocumentDataset:
        if (source.mode or cfg.mode) == "unlabeled":
            return DocumentDataset(_docs([source], data_dir), splitter, lm_prompt=source.lm_prompt)  # type: ignore[arg-type]
        return LabeledDataset(
            [ex for _, ex in _example_stream([source], cfg, data_dir, template, None, False)]
        )

    def build_list(srcs: list[DataSource]) -> LabeledDataset | DocumentDataset | MixedDataset:
        parts = [build_one(source) for source in srcs]
        return parts[0] if len(parts) == 1 else MixedDataset(parts)

    eval_examples: list[Example] = []
    if cfg.eval:
        eval_ds = build_list(cfg.eval)
        eval_examples = [eval_ds[i] for i in range(len(eval_ds))]
        if not eval_examples:
            raise DataError(
                f"data.eval sources ({', '.join(describe(s, data_dir) for s in cfg.eval)}) hold no usable rows"
            )

    if cfg.streaming:
        holdout = cfg.eval_size

        def stream() -> Iterator[tuple[int, Example]]:
            for index, ex in _example_stream(cfg.train, cfg, data_dir, template, splitter, streaming=True):
                if index >= holdout:
                    yield index, ex

        if holdout:
            eval_examples = [
                ex
                for index, ex in _take(
                    _example_stream(cfg.train, cfg, data_dir, template, splitter, True), holdout
                )
            ]
        return TrainData(None, [], stream, eval_examples, template, cfg.mode != "unlabeled", sources)

    train = build_list(cfg.train)
    if len(train) == 0:
        raise DataError(
            f"no usable training rows in {', '.join(sources)}; check the field names for mode={cfg.mode}"
        )
    indices = list(range(len(train)))
    if cfg.eval_size:
        if cfg.eval_size >= len(train):
            raise DataError(
                f"data.eval_size={cfg.eval_size} leaves no training data ({len(train)} examples); lower it"
            )
        # A fixed seeded hold-out, independent of the epoch order.
        perm = np.random.default_rng([seed, 2**31 - 1]).permutation(len(train))
        held = set(int(i) for i in perm[: cfg.eval_size])
        eval_examples = [train[i] for i in sorted(held)]
        indices = [i for i in indices if i not in held]
    return TrainData(train, indices, None, eval_examples, template, cfg.mode != "unlabeled", sources)


def _take(it: Iterator[tuple[int, Example]], n: int) -> Iterator[tuple[int, Example]]:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
