"""FLORES-200 cross-lingual continuation: does the model understand sentence i well enough to predict the
ENGLISH sentence i+1 of the same document?

Three ways to give the LM sentence i, always scoring the same English target tokens (sentence i+1):
  langbridge  the encoder reads sentence i in language X; the LM continues after the bridged states;
  lm_text     the LM reads sentence i in language X as text, then a newline, then the target (LM alone);
  (upper bound) lm_text with X = English: the LM reads the English sentence i itself;
  (reference) no_context: the LM sees only a document-start token before the target.
Score: nats per target token (lower is better) = sum of target-token NLL / number of target tokens.
Because the target ids are identical in every condition, per-example values can be compared pairwise.

Documents come from metadata_devtest.tsv (consecutive sentences with the same source URL form one article), so
sentence i+1 really follows sentence i. Whole documents are assigned to a dev or a test portion by a hash of
their URL, so choices made on dev never see test articles.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

METADATA = "metadata_devtest.tsv"
# One document in DEV_BUCKETS is held out as dev: ~20% of the articles.
DEV_BUCKETS = 5


@dataclass(frozen=True)
class ContinuationPair:
    """Sentence `index` (the context) and `index + 1` (the target) of document `doc`."""

    doc: str
    index: int

    @property
    def target_index(self) -> int:
        return self.index + 1


def read_documents(flores_dir: str | os.PathLike) -> list[str]:
    """Document id (source URL) of every devtest line, from metadata_devtest.tsv."""
    path = Path(flores_dir) / METADATA
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the continuation score needs FLORES-200's metadata_devtest.tsv (it groups "
            "sentences into articles). Put it next to the *.devtest files."
        )
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("URL"):
        raise ValueError(f"{path}: expected a header row starting with 'URL', got {lines[:1]}")
    return [line.split("\t", 1)[0] for line in lines[1:] if line.strip()]


def portion_of(doc: str) -> str:
    """'dev' or 'test' for a document, fixed by a hash of its id (independent of seeds and of the file order)."""
    bucket = int(hashlib.sha1(doc.encode("utf-8")).hexdigest(), 16) % DEV_BUCKETS
    return "dev" if bucket == 0 else "test"


def continuation_pairs(docs: Sequence[str], portion: str = "test") -> list[ContinuationPair]:
    """All (i, i+1) pairs inside one document, for the documents of `portion` ('dev', 'test' or 'all')."""
    if portion not in ("dev", "test", "all"):
        raise ValueError(f"portion must be dev, test or all, got {portion!r}")
    pairs = []
    for i in range(len(docs) - 1):
        if docs[i] == docs[i + 1] and (portion == "all" or portion_of(docs[i]) == portion):
            pairs.append(ContinuationPair(docs[i], i))
    return pairs


def subsample(pairs: list[ContinuationPair], limit: int | None, seed: int) -> list[ContinuationPair]:
    """A fixed random subset (seeded), kept in document order; `None` keeps all."""
    if limit is None or limit >= len(pairs):
        return pairs
    keep = np.random.default_rng(seed).choice(len(pairs), size=limit, replace=False)
    return [pairs[i] for i in sorted(keep)]


# ----------------------------------------------------------------------------- scoring


def _target_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-row summed NLL (nats) and count of labelled positions; logits[:, t] predicts labels[:, t + 1]."""
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits, dim=-1)
    token_lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll = -(token_lp * mask).sum(dim=1)
    return nll.double().cpu().numpy(), mask.sum(dim=1).cpu().numpy()


def _window(labels: torch.Tensor) -> int:
    """Positions to keep at the end of left-padded rows: the longest target plus the position before it."""
    first = (labels != -100).int().argmax(dim=1)
    return int((labels.shape[1] - first).max()) + 1 if labels.shape[1] else 1


def target_ids(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"target {text!r} has no tokens")
    return ids


def _order(lengths: Sequence[int]) -> list[int]:
    # Longest first: padding stays small and an out-of-memory batch fails at once.
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ex", disable=not enabled, dynamic_ncols=True)


@torch.no_grad()
def score_langbridge(
    model: Any,
    processor: Any,
    contexts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "flores langbridge",
) -> tuple[np.ndarray, np.ndarray]:
    """The encoder reads each context; the LM scores the target after its prefix, the soft tokens and the
    processor's lm_prompt. Returns (summed NLL per example, target tokens per example)."""
    if len(contexts) != len(targets):
        raise ValueError(f"{len(contexts)} contexts but {len(targets)} targets")
    model.eval()
    device = next(model.parameters()).device
    nll = np.zeros(len(contexts))
    count = np.zeros(len(contexts), dtype=np.int64)
    order = _order([len(c) + len(t) for c, t in zip(contexts, targets, strict=True)])
    bar = _progress(len(order), desc, progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        # Left padding puts every target at the end of its row, so the LM head only needs the last positions
        # (the vocabulary projection of long contexts is a large share of the cost on CPU).
        batch = processor(
            [contexts[i] for i in idx],
            targets=[targets[i] for i in idx],
            append_eos=False,
            padding_side="left",
        ).to(device)
        labels = batch.pop("labels")
        keep = _window(labels)
        out = model(**batch, use_cache=False, logits_to_keep=keep)
        values, tokens = _target_nll(out.logits, labels[:, -keep:])
        nll[idx], count[idx] = values, tokens
        bar.update(len(idx))
    bar.close()
    return nll, count


@torch.no_grad()
def score_lm_text(
    lm: Any,
    tokenizer: Any,
    contexts: Sequence[str | None],
    targets: Sequence[str],
    *,
    separator: str = "\n",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
    desc: str = "flores lm",
) -> tuple[np.ndarray, np.ndarray]:
    """The LM reads `context + separator` as text and scores the target tokens (tokenized on their own, like
    the LangBridge condition, so all conditions score identical ids). A None context means no context: the
    LM sees only its BOS (or EOS as a document separator) before the target."""
    if len(contexts) != len(targets):
        raise ValueError(f"{len(contexts)} contexts but {len(targets)} targets")
    lm.eval()
    device = next(lm.parameters()).device
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start_id is None:
        raise ValueError("the LM tokenizer has neither BOS nor EOS; cannot mark a document start")
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [
        tokenizer.bos_token_id
    ]
    if max_length is None:
        max_length = int(getattr(lm.config, "max_position_embeddings", 2048) or 2048)
    rows, labels = [], []
    for context, target in zip(contexts, targets, strict=True):
        tgt = target_ids(tokenizer, target)
        if context is None:
            head = [start_id]
        else:
            head = tokenizer(context + separator, add_special_tokens=False)["input_ids"]
            if adds_bos:
                head = [tokenizer.bos_token_id] + head
        # Keep the end of an over-long context: the target must stay whole.
        head = head[-max(1, max_length - len(tgt)) :]
        rows.append(head + tgt)
        labels.append([-100] * len(head) + tgt)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start_id
    nll = np.zeros(len(rows))
    count = np.zeros(len(rows), dtype=np.int64)
    order = _order([len(r) for r in rows])
    bar = _progress(len(order), desc, progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(rows[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        lab = torch.full_like(ids, -100)
        for j, i in enumerate(idx):
            n = len(rows[i])  # left padding: targets end every row (see score_langbridge)
            ids[j, width - n :] = torch.tensor(rows[i])
            mask[j, width - n :] = 1
            lab[j, width - n :] = torch.tensor(labels[i])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # padding must not shift positions
        keep = _window(lab)
        out = lm(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=keep,
        )
        values, tokens = _target_nll(out.logits, lab[:, -keep:].to(device))
        nll[idx], count[idx] = values, tokens
        bar.update(len(idx))
    bar.close()
    return nll, count
