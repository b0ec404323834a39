"""The one decoding and scoring front end: `ModelRunner` sorts requests longest first by the tokens the model reads,
cuts batches, and decodes greedy requests with continuous batching (where the LM's cache allows it) or anything else
with `generate`; log-likelihood requests are scored in batches of whole groups (the choices of one question share a
forward pass). The prompt layout (what the model reads for a request) is a subclass's: see `models.py`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import torch
from transformers import GenerationConfig

from ..continuous_batching import (
    continuous_greedy,
    eos_token_ids,
    stop_string_checker,
    supports_continuous_batching,
)
from ..utils import truncate_at_stop
from .requests import GenerationRequest, LoglikelihoodRequest

__all__ = ["GREEDY_NEUTRAL_SETTINGS", "ModelRunner", "longest_first", "truncate_at_stop"]

T = TypeVar("T")

# Generation settings that leave greedy decoding as a plain argmax until EOS, a stop string or the token budget.
GREEDY_NEUTRAL_SETTINGS = {
    "max_new_tokens",
    "max_length",  # max_new_tokens takes precedence; it is required for the continuous path
    "num_beams",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "stop_strings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}


def longest_first(items: Sequence[T], length: Callable[[T], int]) -> list[int]:
    """Indices of `items`, longest first (ties keep their order): a batch that does not fit in memory fails at
    once, and padding stays small."""
    return sorted(range(len(items)), key=lambda i: -length(items[i]))


class ModelRunner:
    """A model with its prompt layout, decoding and scoring. Subclasses lay out prompts: `_prompt_key`,
    `_prompt_length`, `_loglikelihood_length`, `_inputs`, `_prefill`, `_generate_batch`, `_loglikelihood_batch`."""

    kind: str
    name: str
    batch_size: int
    device: torch.device
    model: Any
    continuous_batching: bool  # greedy requests: continuous batching rather than `generate`
    _lm_tokenizer: Any
    _eos: list[int]

    def _setup(
        self,
        model: Any,
        lm: Any,
        lm_tokenizer: Any,
        batch_size: int,
        name: str | None,
        device: Any,
        continuous_batching: bool,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model.eval()
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if device is not None:
            self.model.to(self.device)
        self.name = name or getattr(model.config, "name_or_path", None) or self.kind
        self._lm_tokenizer = lm_tokenizer
        self._eos = eos_token_ids(lm, lm_tokenizer)
        self.continuous_batching = continuous_batching and supports_continuous_batching(lm)

    @property
    def lm(self) -> Any:
        return self.model

    @property
    def tokenizer(self) -> Any:
        """The LM's tokenizer (outputs are decoded with it)."""
        return self._lm_tokenizer

    # -- prompt layout (subclasses) -----------------------------------------------------------------------
    def _prompt_key(self, request: GenerationRequest) -> tuple:
        raise NotImplementedError

    def _prompt_length(self, request: GenerationRequest) -> int:
        raise NotImplementedError

    def _loglikelihood_length(self, request: LoglikelihoodRequest) -> int:
        raise NotImplementedError

    def _inputs(self, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
        """Model inputs of the left-padded prompts."""
        raise NotImplementedError

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Next-token logits, KV cache and attention mask of the left-padded prompts."""
        raise NotImplementedError

    def _generate_batch(self, requests: list[GenerationRequest], n: int) -> list[str]:
        raise NotImplementedError

    def _loglikelihood_batch(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool, int]]:
        raise NotImplementedError

    def text_request(self, text: str, max_new_tokens: int = 256) -> GenerationRequest:
        """A request for a plain input text, as `langbridge generate` reads it."""
        raise NotImplementedError

    # -- lengths ------------------------------------------------------------------------------------------
    def _count_tokens(self, tokenizer: Any, text: str) -> int:
        """Token count of `text`, cached: batches are sorted by tokens, since characters per token differ
        several-fold between scripts (a Telugu question is far longer in tokens than a German one)."""
        cache = self.__dict__.setdefault("_token_counts", {})
        if text not in cache:
            cache[text] = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        return cache[text]

    def request_length(self, request: GenerationRequest | LoglikelihoodRequest) -> int:
        """Tokens this model reads for `request` (used to sort requests into batches)."""
        if isinstance(request, LoglikelihoodRequest):
            return self._loglikelihood_length(request)
        return self._prompt_length(request)

    # -- decoding -----------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        for i, text in self.generate_stream(requests):
            results[i] = text
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, str]]:
        """(index, output cut at its stop strings) for every request, as outputs complete: pass the whole queue,
        unsorted, so that continuous batching can keep its batch full."""
        requests = list(requests)
        # Identical prompts (e.g. the n samples of one HumanEval problem) are generated together.
        unique: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            unique.setdefault((r.generation_key(), self._prompt_key(r)), []).append(i)

        def done(idxs: list[int], out: str) -> Iterator[tuple[int, str]]:
            for i in idxs:
                yield i, truncate_at_stop(out, requests[i].stop)

        def first(idxs: list[int]) -> GenerationRequest:
            return requests[idxs[0]]

        groups: dict[tuple, list[list[int]]] = {}
        greedy: list[list[int]] = []
        for (gen_key, _), idxs in unique.items():
            if self.continuous_batching and not first(idxs).do_sample:
                greedy.append(idxs)  # greedy rows of any budget and stop strings share one running batch
            else:
                groups.setdefault(gen_key, []).append(idxs)
        if greedy:
            greedy = [greedy[j] for j in longest_first(greedy, lambda idxs: self._prompt_length(first(idxs)))]
            for j, out in self._generate_continuous([first(idxs) for idxs in greedy]):
                yield from done(greedy[j], out)
        for members in groups.values():
            members = [
                members[j] for j in longest_first(members, lambda idxs: self._prompt_length(first(idxs)))
            ]
            sampled = first(members[0]).do_sample
            copies = {len(idxs) for idxs in members}
            if sampled and len(copies) == 1 and (n := copies.pop()) > 1:
                per_call = max(1, self.batch_size // n)
                for start in range(0, len(members), per_call):
                    chunk = members[start : start + per_call]
                    outs = self._generate_batch([first(idxs) for idxs in chunk], n)
                    for j, idxs in enumerate(chunk):
                        for s, i in enumerate(idxs):
                            yield i, truncate_at_stop(outs[j * n + s], requests[i].stop)
                continue
            if sampled:
                # Uneven copy counts: every copy is its own row.
                members = [[i] for idxs in members for i in idxs]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                outs = self._generate_batch([first(idxs) for idxs in chunk], 1)
                for out, idxs in zip(outs, chunk, strict=True):
                    yield from done(idxs, out)

    def _generate_continuous(
        self, requests: list[GenerationRequest], batch_size: int | None = None
    ) -> Iterator[tuple[int, str]]:
        """Greedy outputs with continuous batching, as (index into `requests`, text) in order of completion."""
        tokenizer = self._lm_tokenizer
        answers = continuous_greedy(
            self.model,
            lambda idx: self._prefill([requests[i] for i in idx]),
            [r.max_new_tokens for r in requests],
            batch_size or self.batch_size,
            self._eos,
            stop_string_checker(tokenizer, [r.stop for r in requests]),
        )
        for j, ids in answers:
            yield j, tokenizer.decode(ids, skip_special_tokens=True)

    def _generation_config(self, request: GenerationRequest, n: int) -> GenerationConfig:
        # A fresh config: the checkpoint's own sampling defaults must not leak into greedy evaluation.
        kwargs: dict[str, Any] = dict(
            max_new_tokens=request.max_new_tokens,
            do_sample=request.do_sample,
            num_return_sequences=n,
            pad_token_id=self._lm_tokenizer.pad_token_id,
            eos_token_id=self._eos or None,
            stop_strings=list(request.stop) or None,
        )
        if request.do_sample:
            kwargs.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        return GenerationConfig(**kwargs)

    def greedy_settings(self, kwargs: dict[str, Any]) -> tuple[int, list[str]] | None:
        """(max_new_tokens, stop strings) when a `generate(**kwargs)` call is plain greedy decoding, which continuous
        batching reproduces; None when `generate` must run it (beams, sampling, penalties or other logits processing
        in the call or the checkpoint's generation config, or an LM whose cache cannot be joined)."""
        config = self.model.generation_config.to_diff_dict() if self.model.generation_config else {}
        settings = {**config, **{k: v for k, v in kwargs.items() if v is not None}}
        if (
            set(settings) - GREEDY_NEUTRAL_SETTINGS
            or settings.get("num_beams", 1) != 1
            or settings.get("do_sample", False)
            or not settings.get("max_new_tokens")
            or not supports_continuous_batching(self.lm)
        ):
            return None
        return int(settings["max_new_tokens"]), list(settings.get("stop_strings") or [])

    def generate_texts(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        continuous_batching: bool = True,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Outputs for plain input texts with any `generate` settings, in input order, batched longest first.
        Plain greedy decoding runs with continuous batching (finished answers leave the batch, the next inputs
        join it); anything else (beams, sampling, a checkpoint's own generation settings) runs `generate` a batch
        at a time."""
        batch_size = batch_size or self.batch_size
        budget = generate_kwargs.get("max_new_tokens") or 256
        requests = [self.text_request(t, budget) for t in texts]
        order = longest_first(requests, self._prompt_length)
        outputs: list[str] = [""] * len(texts)
        greedy = self.greedy_settings(generate_kwargs) if continuous_batching else None
        if greedy is not None:
            max_new_tokens, stops = greedy
            rows = [replace(requests[i], max_new_tokens=max_new_tokens, stop=tuple(stops)) for i in order]
            with torch.inference_mode():
                for j, text in self._generate_continuous(rows, batch_size):
                    outputs[order[j]] = text
            return outputs
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self._inputs([requests[i] for i in chunk])
            with torch.inference_mode():
                sequences = self.model.generate(**batch, tokenizer=self._lm_tokenizer, **generate_kwargs)
            new = sequences[:, batch["input_ids"].shape[1] :]
            for i, text in zip(
                chunk, self._lm_tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
            ):
                outputs[i] = text
        return outputs

    # -- scoring ------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        return [lp for lp, _, _ in self.loglikelihood_details(requests)]

    def loglikelihood_with_greedy(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, whether greedy decoding would produce the continuation)."""
        return [(lp, greedy) for lp, greedy, _ in self.loglikelihood_details(requests)]

    def loglikelihood_details(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[tuple[float, bool, int]]:
        """(sum of continuation log-probs, greedy would produce it, number of continuation tokens scored)."""
        results: list[tuple[float, bool, int] | None] = [None] * len(requests)
        for i, value in self.loglikelihood_stream([[r] for r in requests]):
            results[i] = value[0]
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def loglikelihood_stream(
        self, groups: Sequence[Sequence[LoglikelihoodRequest]]
    ) -> Iterator[tuple[int, list[tuple[float, bool, int]]]]:
        """(group index, details of its requests) for every group, batch by batch. Groups (e.g. the choices of one
        question) are never split across forward passes; they are sorted longest first by the tokens the model
        reads and packed `batch_size // largest group` to a batch; within a batch, requests with one context sit
        together, so the encoder runs once per context."""
        groups = [list(g) for g in groups]
        if not groups:
            return
        order = longest_first(groups, lambda g: sum(self.request_length(r) for r in g))
        per_batch = max(1, self.batch_size // max(len(g) for g in groups))
        for start in range(0, len(order), per_batch):
            chunk = order[start : start + per_batch]
            flat = [(gi, r) for gi in chunk for r in groups[gi]]
            rows = sorted(
                range(len(flat)), key=lambda k: (-self._context_length(flat[k][1]), flat[k][1].context)
            )
            values: list[Any] = [None] * len(flat)
            for start_row in range(0, len(rows), self.batch_size):
                part = rows[start_row : start_row + self.batch_size]
                for k, value in zip(part, self._loglikelihood_batch([flat[k][1] for k in part]), strict=True):
                    values[k] = value
            pos = 0
            for gi in chunk:
                yield gi, values[pos : pos + len(groups[gi])]
                pos += len(groups[gi])

    def _context_length(self, request: LoglikelihoodRequest) -> int:
        """Tokens of the context alone (requests sharing a context sort together)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "device": str(self.device),
            "batch_size": self.batch_size,
            "continuous_batching": self.continuous_batching,
        }
