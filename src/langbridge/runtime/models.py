"""Prompt layouts: what a LangBridge model (encoder text, then the LM after the soft tokens) and a plain causal LM (the
whole prompt as tokens) read for a request, with left padding for generation and right padding for scoring."""

from __future__ import annotations

from typing import Any

import torch

from ..continuous_batching import prefill_batch
from ..utils import adds_bos
from .decoding import ModelRunner
from .prompts import chat_prompt, with_bos
from .requests import GenerationRequest, LoglikelihoodRequest, resolve_lm_prompt
from .scoring import target_logprobs

__all__ = ["LangBridgeRunner", "CausalLMRunner"]


class LangBridgeRunner(ModelRunner):
    """A LangBridgeModel with its LangBridgeProcessor. `keep_prompt_end` (a subclass's choice): over-long encoder inputs
    lose their start (evaluation) rather than their end (the processor's default)."""

    kind = "langbridge"
    keep_prompt_end = False

    def __init__(
        self,
        model: Any,
        processor: Any,
        batch_size: int = 8,
        name: str | None = None,
        device: Any = None,
        continuous_batching: bool = True,
    ):
        self._setup(model, model.lm, processor.lm_tokenizer, batch_size, name, device, continuous_batching)
        self.processor = processor
        if self.keep_prompt_end:
            # Over-long few-shot prompts keep their end (the question) rather than their start.
            self.processor.encoder_tokenizer.truncation_side = "left"
        enc_tok = processor.encoder_tokenizer
        # What the encoder reads for an empty context: its end-of-sequence token alone, the counterpart of a
        # plain LM conditioning on EOS (the processor refuses empty text).
        self._empty_context = next(
            (t for t in (enc_tok.sep_token, enc_tok.eos_token, enc_tok.cls_token, enc_tok.bos_token) if t),
            ".",
        )

    @property
    def lm(self) -> Any:
        return self.model.lm

    def _encoder_text(self, text: str) -> str:
        return text if text.strip() else self._empty_context

    def text_request(self, text: str, max_new_tokens: int = 256) -> GenerationRequest:
        if not text.strip():
            raise ValueError("Input text is empty or whitespace-only; pass real text.")
        return GenerationRequest(encoder_text=text, full_prompt=text, max_new_tokens=max_new_tokens)

    def _prompt_key(self, request: GenerationRequest) -> tuple:
        return (request.encoder_text, resolve_lm_prompt(request, self.processor.lm_prompt))

    def _prompt_length(self, request: GenerationRequest) -> int:
        return self._count_tokens(self.processor.encoder_tokenizer, request.encoder_text)

    def _context_length(self, request: LoglikelihoodRequest) -> int:
        return self._count_tokens(self.processor.encoder_tokenizer, request.context)

    def _loglikelihood_length(self, request: LoglikelihoodRequest) -> int:
        return self._context_length(request) + self._count_tokens(
            self.processor.lm_tokenizer, request.continuation
        )

    def _inputs(self, requests: list[GenerationRequest]) -> Any:
        proc = self.processor
        return proc(
            [self._encoder_text(r.encoder_text) for r in requests],
            lm_prompts=[resolve_lm_prompt(r, proc.lm_prompt) for r in requests],
            padding_side="left",
        ).to(self.device)

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        return prefill_batch(self.model, self._inputs(requests))

    def _generate_batch(self, requests: list[GenerationRequest], n: int) -> list[str]:
        proc = self.processor
        batch = self._inputs(requests)
        ids = self.model.generate(
            **batch,
            generation_config=self._generation_config(requests[0], n),
            tokenizer=proc.lm_tokenizer,  # needed for stop strings
        )
        return proc.decode_new_tokens(ids, batch)

    def _loglikelihood_batch(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool, int]]:
        proc = self.processor
        contexts = [self._encoder_text(r.context) for r in requests]
        # The continuation stands alone after the soft tokens and the LM prompt (as in the paper's harness).
        batch = proc(
            contexts,
            lm_prompts=[resolve_lm_prompt(r, proc.lm_prompt) for r in requests],
            targets=[r.continuation.lstrip() for r in requests],
            append_eos=False,
            padding_side="right",
        ).to(self.device)
        # The encoder runs once per distinct context (XCOPA's two choices share theirs).
        unique = list(dict.fromkeys(contexts))
        enc = proc(unique).to(self.device)
        embeds, mask = self.model.encode(enc["encoder_input_ids"], enc["encoder_attention_mask"])
        index = torch.tensor([unique.index(c) for c in contexts], device=self.device)
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            bridged_embeds=embeds[index],
            bridged_mask=mask[index],
            use_cache=False,
        )
        return target_logprobs(out.logits, batch["labels"])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "processor": self.processor.to_dict()}


class CausalLMRunner(ModelRunner):
    """A plain causal LM reading the whole prompt as text: the LM-alone baseline."""

    kind = "causal-lm"

    def __init__(
        self,
        lm: Any,
        tokenizer: Any,
        batch_size: int = 8,
        name: str | None = None,
        device: Any = None,
        continuous_batching: bool = True,
    ):
        self._setup(lm, lm, tokenizer, batch_size, name, device, continuous_batching)
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(
                    "The LM tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token."
                )
            tokenizer.pad_token = tokenizer.eos_token  # pads are masked out
        self._bos = adds_bos(tokenizer)
        positions = getattr(lm.config, "max_position_embeddings", None) or getattr(
            lm.config, "n_positions", None
        )
        self.max_length = int(positions or 2048)

    def lm_prompt(self, text: str) -> str:
        """The LM-alone baseline reads the question as text, in its chat template when it has one."""
        if not text.strip():
            raise ValueError("Input text is empty or whitespace-only; pass real text.")
        if getattr(self._lm_tokenizer, "chat_template", None):
            return chat_prompt(self._lm_tokenizer, text)
        return text

    def text_request(self, text: str, max_new_tokens: int = 256) -> GenerationRequest:
        return GenerationRequest(
            encoder_text=text, full_prompt=self.lm_prompt(text), max_new_tokens=max_new_tokens
        )

    def _encode(self, text: str) -> list[int]:
        return with_bos(
            self._lm_tokenizer, self._lm_tokenizer(text, add_special_tokens=False)["input_ids"], self._bos
        )

    def _prompt_key(self, request: GenerationRequest) -> tuple:
        return (request.full_prompt,)

    def _prompt_length(self, request: GenerationRequest) -> int:
        return self._count_tokens(self._lm_tokenizer, request.full_prompt)

    def _context_length(self, request: LoglikelihoodRequest) -> int:
        return self._count_tokens(self._lm_tokenizer, request.context)

    def _loglikelihood_length(self, request: LoglikelihoodRequest) -> int:
        return self._count_tokens(self._lm_tokenizer, request.context + request.continuation)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._lm_tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _inputs(self, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
        # Keep the end of an over-long prompt, next to the answer.
        input_ids, attention_mask = self._left_pad(
            [self._encode(r.full_prompt)[-max(1, self.max_length - r.max_new_tokens) :] for r in requests]
        )
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        return prefill_batch(self.model, self._inputs(requests))

    def _generate_batch(self, requests: list[GenerationRequest], n: int) -> list[str]:
        inputs = self._inputs(requests)
        ids = self.model.generate(
            **inputs,
            generation_config=self._generation_config(requests[0], n),
            tokenizer=self._lm_tokenizer,  # needed for stop strings
        )
        return self._lm_tokenizer.batch_decode(
            ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )

    def _loglikelihood_batch(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool, int]]:
        tokenizer = self._lm_tokenizer
        rows, labels = [], []
        for r in requests:
            # Trailing context spaces belong to the continuation, where BPE tokenizers put them.
            context = r.context if r.full_context is None else r.full_context
            continuation = r.continuation
            stripped = context.rstrip(" ")
            continuation = context[len(stripped) :] + continuation
            if stripped:
                ctx_ids = self._encode(stripped)
                whole = self._encode(stripped + continuation)
            else:  # empty context: condition on BOS (or EOS) alone
                ctx_ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self._eos[0]]
                whole = []
            # Tokenizing jointly keeps the boundary as the LM saw such text in training; fall back to
            # separate tokenization when the joint one does not start with the context tokens.
            if whole[: len(ctx_ids)] == ctx_ids and len(whole) > len(ctx_ids):
                cont_ids = whole[len(ctx_ids) :]
            else:
                cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont_ids:
                raise ValueError(f"Continuation {r.continuation!r} is empty after tokenization.")
            seq = (ctx_ids + cont_ids)[-self.max_length :]
            n_cont = min(len(cont_ids), len(seq) - 1)
            rows.append(seq)
            labels.append([-100] * (len(seq) - n_cont) + seq[len(seq) - n_cont :])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        lab = torch.full_like(ids, -100)
        for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            lab[i, : len(lb)] = torch.tensor(lb)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        return target_logprobs(out.logits, lab.to(self.device))
