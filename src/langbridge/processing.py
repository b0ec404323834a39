"""LangBridgeProcessor: builds the encoder side and the LM side (with soft-token slots) of a batch."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from langbridge.configuration import T5_FAMILY
from langbridge.utils import adds_bos, atomic_write_text, resolve_model_name

PROCESSOR_CONFIG = "langbridge_processor.json"
ENCODER_TOKENIZER_DIR = "encoder_tokenizer"
LM_TOKENIZER_DIR = "lm_tokenizer"
# The official recipe adds these to mT5's vocabulary, whose sentencepiece model drops tabs, newlines and space runs.
T5_WHITESPACE_TOKENS = ["\t", "\n", "\r", "\x0b", "\x0c", "  ", "   ", "    "]


def load_encoder_tokenizer(name_or_path: str | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    tokenizer = name_or_path
    t5_family = "T5" in type(tokenizer).__name__
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        source = resolve_model_name(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(source)
        t5_family = "T5" in type(tokenizer).__name__ or _model_type(source) in T5_FAMILY
    if t5_family and not set(T5_WHITESPACE_TOKENS) <= set(tokenizer.get_vocab()):
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=True) for t in T5_WHITESPACE_TOKENS])
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"Encoder tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token."
        )
    return tokenizer


def _model_type(source: str) -> str | None:
    config_file = Path(source) / "config.json"
    if config_file.exists():
        return json.loads(config_file.read_text()).get("model_type")
    return None


def load_lm_tokenizer(name_or_path: str | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    tokenizer = name_or_path
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(name_or_path))
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "LM tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first."
            )
        tokenizer.pad_token = tokenizer.eos_token  # pads are masked out, so any id is safe
    return tokenizer


def default_lm_prefix(lm_tokenizer: PreTrainedTokenizerBase) -> str:
    """The paper puts the LM's BOS before the soft tokens, for LMs whose tokenizer adds a BOS."""
    return lm_tokenizer.bos_token if adds_bos(lm_tokenizer) else ""


def default_soft_token_id(lm_tokenizer: PreTrainedTokenizerBase, lm_prefix: str = "") -> int:
    """A placeholder id for the soft slots: preferably a special token that decodes to nothing; never one of the
    prefix tokens, which precede the slots and would be mistaken for them."""
    prefix_ids = set(lm_tokenizer(lm_prefix, add_special_tokens=False)["input_ids"]) if lm_prefix else set()
    candidates = (lm_tokenizer.unk_token_id, lm_tokenizer.pad_token_id, *lm_tokenizer.all_special_ids)
    for candidate in (*candidates, *range(len(lm_tokenizer))):
        if candidate is not None and candidate not in prefix_ids:
            return int(candidate)
    raise ValueError("Could not choose a soft-token placeholder id; pass soft_token_id explicitly.")


class LangBridgeProcessor:
    """Wraps the encoder tokenizer and the LM tokenizer.

    LM side of each example: `lm_prefix` (the LM's BOS by default) + one placeholder slot per real encoder token
    + one slot for the end-of-encoder vector + the LM prompt (+ the target and EOS when training).
    """

    def __init__(
        self,
        encoder_tokenizer: PreTrainedTokenizerBase,
        lm_tokenizer: PreTrainedTokenizerBase,
        encoder_template: str = "{text}",
        lm_prompt: str = "",
        lm_prefix: str | None = None,
        max_encoder_length: int = 512,
        max_lm_length: int = 1024,
        soft_token_id: int | None = None,
    ):
        if "{text}" not in encoder_template:
            raise ValueError(f"encoder_template must contain '{{text}}', got {encoder_template!r}.")
        for name, value in (("max_encoder_length", max_encoder_length), ("max_lm_length", max_lm_length)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{name}={value!r} must be an integer >= 2.")
        self.encoder_tokenizer = load_encoder_tokenizer(encoder_tokenizer)
        self.lm_tokenizer = load_lm_tokenizer(lm_tokenizer)
        self.encoder_template = encoder_template
        self.lm_prompt = lm_prompt
        self.lm_prefix = default_lm_prefix(self.lm_tokenizer) if lm_prefix is None else lm_prefix
        self.max_encoder_length = max_encoder_length
        self.max_lm_length = max_lm_length
        self.soft_token_id = (
            default_soft_token_id(self.lm_tokenizer, self.lm_prefix)
            if soft_token_id is None
            else int(soft_token_id)
        )
        self._prefix_ids = self._lm_ids(self.lm_prefix)
        if self.soft_token_id in self._prefix_ids:
            raise ValueError(
                f"soft_token_id={self.soft_token_id} occurs in lm_prefix {self.lm_prefix!r}; pick another id."
            )

    @classmethod
    def from_encoder_and_lm(cls, encoder: Any, lm: Any, **kwargs: Any) -> LangBridgeProcessor:
        """`encoder`/`lm`: a path, hub id or alias, a tokenizer, or a model (its `name_or_path` is used)."""
        return cls(
            load_encoder_tokenizer(_tokenizer_source(encoder)),
            load_lm_tokenizer(_tokenizer_source(lm)),
            **kwargs,
        )

    # ----------------------------------------------------------------------------------------------------------
    def _lm_ids(self, text: str) -> list[int]:
        # verbose=False: over-long text is truncated (with our own warning) by __call__, not an error here.
        return self.lm_tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []

    def _encode_encoder_side(self, texts: list[str]) -> list[list[int]]:
        texts = [self.encoder_template.format(text=t) for t in texts]
        encoded = self.encoder_tokenizer(texts, verbose=False)["input_ids"]
        too_long = [i for i, ids in enumerate(encoded) if len(ids) > self.max_encoder_length]
        if too_long:
            warnings.warn(
                f"{len(too_long)} encoder input(s) (e.g. index {too_long[0]}, {len(encoded[too_long[0]])} tokens) exceed "
                f"max_encoder_length={self.max_encoder_length} and were truncated.",
                stacklevel=3,
            )
            truncated = self.encoder_tokenizer(
                [texts[i] for i in too_long],
                truncation=True,
                max_length=self.max_encoder_length,
            )["input_ids"]
            for i, ids in zip(too_long, truncated, strict=True):
                encoded[i] = ids
        return encoded

    def __call__(
        self,
        texts: str | Sequence[str],
        lm_prompts: str | Sequence[str] | None = None,
        targets: str | Sequence[str] | None = None,
        append_eos: bool | Sequence[bool] = True,
        padding_side: str = "left",
        return_tensors: str = "pt",
    ) -> BatchEncoding:
        """Encoder inputs plus the LM side: prefix, soft-token slots, prompt and (in training) the target.

        `lm_prompts` and `append_eos` may be given per example; a None prompt means the processor's own."""
        if texts is None or isinstance(texts, (bytes, dict)) or not isinstance(texts, (str, Iterable)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}.")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("texts is empty: pass at least one input text.")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str; pass text.")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"Input text at index {i} is empty or whitespace-only ({text!r}); pass real text."
                )
        n = len(texts)
        prompts = [
            self.lm_prompt if p is None else p
            for p in _per_example(lm_prompts, n, "lm_prompts", default=self.lm_prompt)
        ]
        eos_flags = _per_example(append_eos, n, "append_eos", default=True)
        target_list = None if targets is None else _per_example(targets, n, "targets", default=None)
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; use 'left' (generation) or 'right' (training).")
        if return_tensors != "pt":
            raise ValueError("Only return_tensors='pt' is supported.")

        encoder_ids = self._encode_encoder_side(texts)
        lm_rows, label_rows = [], []
        eos = self.lm_tokenizer.eos_token_id
        truncated = starved = 0
        for i in range(n):
            prompt_ids = self._lm_ids(prompts[i])
            target_ids = []
            if target_list is not None:
                target_ids = self._lm_ids(target_list[i]) + (
                    [eos] if eos_flags[i] and eos is not None else []
                )
            budget = self.max_lm_length - len(self._prefix_ids)
            if len(prompt_ids) + len(target_ids) > budget:
                truncated += 1
                starved += bool(target_ids) and len(prompt_ids) >= budget
                target_ids = target_ids[: max(0, budget - len(prompt_ids))]
                if len(prompt_ids) > budget:
                    prompt_ids = prompt_ids[len(prompt_ids) - budget :]  # keep the end, next to the answer
            slots = [self.soft_token_id] * (len(encoder_ids[i]) + 1)
            head = self._prefix_ids + slots + prompt_ids
            lm_rows.append(head + target_ids)
            label_rows.append([-100] * len(head) + target_ids)
        if truncated:
            warnings.warn(
                f"{truncated} example(s) exceed max_lm_length={self.max_lm_length} LM text tokens and were truncated.",
                stacklevel=2,
            )
        if starved:
            # Separate from the truncation warning: training silently learns nothing from these examples.
            warnings.warn(
                f"{starved} example(s) have no target tokens left: the LM prefix and prompt fill all "
                f"max_lm_length={self.max_lm_length} tokens, so they add no loss. Raise max_lm_length or shorten "
                "the prompt template.",
                stacklevel=2,
            )

        enc_pad = self.encoder_tokenizer.pad_token_id
        batch = {
            **_pad(encoder_ids, enc_pad, "right", "encoder_input_ids", "encoder_attention_mask"),
            **_pad(lm_rows, self.lm_tokenizer.pad_token_id, padding_side, "input_ids", "attention_mask"),
        }
        if target_list is not None:
            batch["labels"] = _pad(label_rows, -100, padding_side, "labels", "_")["labels"]
        return BatchEncoding(batch)

    # ----------------------------------------------------------------------------------------------------------
    def batch_decode(self, sequences: torch.Tensor | list[list[int]], **kwargs: Any) -> list[str]:
        return self.lm_tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, ids: torch.Tensor | list[int], **kwargs: Any) -> str:
        return self.lm_tokenizer.decode(ids, **kwargs)

    def decode_new_tokens(self, sequences: torch.Tensor, batch: BatchEncoding | dict) -> list[str]:
        """Decode only what `generate` added after the prompt."""
        return self.lm_tokenizer.batch_decode(
            sequences[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder_template": self.encoder_template,
            "lm_prompt": self.lm_prompt,
            "lm_prefix": self.lm_prefix,
            "max_encoder_length": self.max_encoder_length,
            "max_lm_length": self.max_lm_length,
            "soft_token_id": self.soft_token_id,
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder_tokenizer.save_pretrained(directory / ENCODER_TOKENIZER_DIR)
        self.lm_tokenizer.save_pretrained(directory / LM_TOKENIZER_DIR)
        atomic_write_text(
            directory / PROCESSOR_CONFIG, json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> LangBridgeProcessor:
        directory = Path(directory)
        config_file = directory / PROCESSOR_CONFIG
        missing = [
            p
            for p in (config_file, directory / ENCODER_TOKENIZER_DIR, directory / LM_TOKENIZER_DIR)
            if not p.exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"{directory} is not a saved LangBridgeProcessor: missing {', '.join(str(m) for m in missing)}. "
                "Save one with processor.save_pretrained(directory)."
            )
        try:
            settings = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file} is not valid JSON ({err}); re-save the processor.") from err
        settings.update(overrides)
        return cls(
            AutoTokenizer.from_pretrained(directory / ENCODER_TOKENIZER_DIR),
            AutoTokenizer.from_pretrained(directory / LM_TOKENIZER_DIR),
            **settings,
        )

    def __repr__(self) -> str:
        return (
            f"LangBridgeProcessor(encoder_tokenizer={type(self.encoder_tokenizer).__name__}, "
            f"lm_tokenizer={type(self.lm_tokenizer).__name__}, {self.to_dict()})"
        )


def _tokenizer_source(obj: Any) -> Any:
    if isinstance(obj, PreTrainedTokenizerBase | str | os.PathLike):
        return str(obj) if isinstance(obj, os.PathLike) else obj
    name = getattr(getattr(obj, "config", None), "name_or_path", None) or getattr(obj, "name_or_path", None)
    if not name:
        raise ValueError(
            f"Cannot find a tokenizer for {type(obj).__name__}: pass a tokenizer or the model's path/hub id instead."
        )
    return name


def _per_example(value: Any, n: int, name: str, default: Any) -> list:
    if value is None:
        return [default] * n
    if isinstance(value, (str, bool)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries but there are {n} texts; pass one per text.")
    return value


def _pad(
    rows: list[list[int]], pad_id: int, side: str, ids_key: str, mask_key: str
) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return {ids_key: ids, mask_key: mask}
