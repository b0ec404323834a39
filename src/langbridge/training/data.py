"""Training data: readers (local jsonl/json/txt/tsv files, hub datasets), example construction for the two
training modes, length-grouped deterministic batching (map-style and streaming), and the collator.

Determinism: the order of batches depends only on (seed, epoch); the split point of an unlabeled document
depends only on (seed, document index). A run can therefore resume at (epoch, batch index) and see exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from langbridge.training.config import DataConfig, DataSource
from langbridge.training.templates import PromptTemplate, get_template
from langbridge.utils import hub_offline, utf8_lines

logger = logging.getLogger("langbridge.training")

SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "json", ".txt": "txt", ".tsv": "tsv"}
# Upper bound on characters per token, used only to avoid tokenizing megabytes of a document we will cut anyway.
MAX_CHARS_PER_TOKEN = 32


class DataError(ValueError):
    """Data could not be found or read; the message says which file and how to fix it."""


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


# ----------------------------------------------------------------------------- locating data


def repo_shared_data() -> Path:
    """../shared/data next to the repository checkout that holds this package."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def resolve_data_dir(data_dir: str | None = None) -> Path | None:
    """data.data_dir, else $LANGBRIDGE_DATA, else ../shared/data (from the CWD, then from the repo)."""
    if data_dir:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"data.data_dir={data_dir!r} is not a directory; fix the path or unset it")
        return path
    env = os.environ.get("LANGBRIDGE_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"LANGBRIDGE_DATA={env!r} is not a directory; fix it or unset it")
        return path
    for candidate in (Path.cwd().parent / "shared" / "data", repo_shared_data()):
        if candidate.is_dir():
            return candidate
    return None


def _candidates(source: DataSource, data_dir: Path | None) -> list[Path]:
    path = Path(str(source.path)).expanduser()
    return [path] if path.is_absolute() else [Path.cwd() / path] + ([data_dir / path] if data_dir else [])


def missing_file(source: DataSource, data_dir: Path | None) -> tuple[str, Path]:
    """'data file ... not found (looked in: ...)' and where the file should go, for a missing `path:`."""
    looked = ", ".join(str(c) for c in _candidates(source, data_dir))
    where = data_dir / str(source.path) if data_dir else Path("<data_dir>") / str(source.path)
    return f"data file {source.path!r} not found (looked in: {looked})", where


def locate(source: DataSource, data_dir: Path | None) -> Path | None:
    """The local file for `source`, or None when it should come from the hub."""
    if source.path is None:
        return None
    for candidate in _candidates(source, data_dir):
        if candidate.is_file():
            return candidate
    if source.hub is not None:
        return None
    missing, where = missing_file(source, data_dir)
    raise DataError(
        f"{missing}. Put the file at {where}, point data.data_dir or $LANGBRIDGE_DATA at the folder that holds "
        "it, or add `hub: <dataset name>` to load it from the hub."
    )


# ----------------------------------------------------------------------------- readers


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix if path.suffix != ".gz" else Path(path.stem).suffix
    if suffix not in SUFFIX_FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; set `format:` to one of "
            f"{', '.join(SUFFIX_FORMATS.values())}"
        )
    return SUFFIX_FORMATS[suffix]


def _iter_jsonl(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
        for lineno, line in utf8_lines(handle, path, DataError):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object"
                ) from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            yield row


def _iter_json(path: Path) -> Iterator[dict]:
    with _open_text(path) as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines saved under a .json name (common for HF exports)
            yield from _iter_jsonl(path)
            return
        raise DataError(f"{path}: not valid JSON ({exc}); use a list of objects or JSON lines") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(
            f"{path}: expected a JSON list of objects (or {{'data': [...]}}), got {type(data).__name__}"
        )
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i} is a {type(row).__name__}, expected an object")
        yield row


def _iter_txt(path: Path, unit: str, field: str) -> Iterator[dict]:
    with _open_text(path) as handle:
        if unit == "line":
            for line in handle:
                if line.strip():
                    yield {field: line.rstrip("\n")}
        elif unit == "paragraph":
            block: list[str] = []
            for line in handle:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield {field: "\n".join(block)}
                    block = []
            if block:
                yield {field: "\n".join(block)}
        else:
            yield {field: handle.read()}


def _iter_tsv(path: Path, columns: list[str] | None) -> Iterator[dict]:
    with _open_text(path) as handle:
        # QUOTE_NONE: benchmark TSVs (e.g. MGSM) contain bare quotes inside fields.
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = columns
        for lineno, row in enumerate(reader, 1):
            if not row:
                continue
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{lineno}: {len(row)} columns but the header has {len(header)} ({header}); "
                    "set `columns:` for files without a header row"
                )
            yield dict(zip(header, row, strict=True))


def iter_local(path: Path, source: DataSource) -> Iterator[dict]:
    fmt = detect_format(path, source.format)
    if fmt == "jsonl":
        return _iter_jsonl(path)
    if fmt == "json":
        return _iter_json(path)
    if fmt == "txt":
        return _iter_txt(path, source.txt_unit, source.text_field)
    return _iter_tsv(path, source.columns)


def load_hub(source: DataSource, streaming: bool, missing: tuple[str, Path] | None = None) -> Iterable[dict]:
    """Rows of `source.hub`. `missing` (from :func:`missing_file`) is the local file it stands in for: errors
    then name that file first, since putting it in place is usually the simpler fix."""
    first, local_fix = (
        (f"{missing[0]}; its fallback, ", f"put the file at {missing[1]}")
        if missing
        else ("", "use a local file via `path:`")
    )
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"{first}hub dataset {source.hub!r} needs the `datasets` package: pip install 'langbridge[hub]', "
            f"or {local_fix}"
        ) from exc
    try:
        rows = datasets.load_dataset(
            source.hub,
            source.hub_config,
            split=source.split,
            data_dir=source.hub_data_dir,
            streaming=streaming,
        )
    except Exception as exc:  # datasets raises many types (connection, missing config, ...)
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if hub_offline(datasets=True):
            raise DataError(
                f"{first}hub dataset {source.hub!r} cannot be loaded: the hub is offline (HF_HUB_OFFLINE or "
                f"HF_DATASETS_OFFLINE is set) and it is not cached ({reason}); {local_fix}, or go online"
            ) from exc
        raise DataError(
            f"{first}hub dataset {source.hub!r} (split {source.split!r}) could not be loaded: {reason}; "
            f"{local_fix}, or check the dataset name, config and your connection"
        ) from exc
    if missing:  # only once it worked: a failure stays a single line
        logger.warning("%s; loaded the hub dataset %r instead", missing[0], source.hub)
    return rows


def iter_records(source: DataSource, data_dir: Path | None, streaming: bool = False) -> Iterator[dict]:
    """Raw rows of one source, local file first, hub second; stops after source.max_examples rows."""
    path = locate(source, data_dir)
    if path is not None:
        rows: Iterable[dict] = iter_local(path, source)
    else:
        missing = missing_file(source, data_dir) if source.path is not None else None
        rows = load_hub(source, streaming, missing)
    for i, row in enumerate(rows):
        if source.max_examples is not None and i >= source.max_examples:
            break
        yield row


def describe(source: DataSource, data_dir: Path | None) -> str:
    path = locate(source, data_dir)
    return str(path) if path is not None else f"hub:{source.hub}[{source.split}]"


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


# ----------------------------------------------------------------------------- batching


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
