"""A reference that runs the official LangBridge implementation's approach on the same weights, for speed ratios.

What the official code (github.com/kaistAI/LangBridge, transformers 4.37) does, reproduced here on our parts
(`model.encoder`, `model.bridge`, `model.lm`) rather than copied:

- Batches: inputs shuffled with no length grouping; the encoder side is padded to the longest input of the batch
  and the LM side (right-padded) is concatenated after ALL encoder positions:
  [LM prefix | bridged encoder states incl. padded slots | end-of-encoder vector | LM tokens]. Padded encoder
  slots stay in the sequence as masked "holes" and, since no position ids are passed, consume positions.
- Loss: the LM head runs on every position and cross-entropy over the full vocabulary covers the whole
  sequence (ignored positions are masked by -100 only after the logits exist).
- Precision: float32 everything (pass an fp32 model; see models.fp32_copy).
- Frozen encoder under `no_grad`, run once per forward; in generation once per example (the cache then skips it);
  for log-likelihood requests once per (context, continuation) pair, i.e. again for every choice.
- Generation: one example at a time (the official harness evaluates with batch size 1; its batched decoding is
  wrong because of the holes), greedy, the LM head on every prefill position, and stop sequences checked by
  decoding the last tokens of the sequence at every step.

The decoding loop here is a minimal greedy loop over the LM's own cache, leaner than the `generate` loop the
official code went through, so the ratios it yields are conservative.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from langbridge.evaluation.backends import LangBridgeBackend
from langbridge.evaluation.requests import GenerationRequest, resolve_lm_prompt
from langbridge.evaluation.scoring import truncate_at_stop


class OfficialReference:
    def __init__(self, model: Any, processor: Any):
        self.model = model
        self.processor = processor
        self.encoder = model.encoder
        self.bridge = model.bridge
        self.decoder = model.lm.get_decoder()
        self.head = model.lm.get_output_embeddings()
        self.embed = model.lm.get_input_embeddings()
        self.enc_tok = processor.encoder_tokenizer
        self.lm_tok = processor.lm_tokenizer
        self.prefix_ids = self._lm_ids(processor.lm_prefix)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def _lm_ids(self, text: str) -> list[int]:
        return self.lm_tok(text, add_special_tokens=False)["input_ids"] if text else []

    # ------------------------------------------------------------------------------------------------------------
    def encoder_features(self, enc_ids: torch.Tensor, enc_mask: torch.Tensor) -> torch.Tensor:
        """Projected states of every encoder position (padding included) followed by the end-of-encoder vector."""
        with torch.no_grad():
            hidden = self.encoder(input_ids=enc_ids, attention_mask=enc_mask).last_hidden_state
        projected = self.bridge.project(hidden.to(self.bridge.enc_eos.dtype))
        eos = self.bridge.enc_eos.expand(projected.shape[0], 1, -1)
        return torch.cat([projected, eos], dim=1)

    def _layout(
        self, enc_ids: torch.Tensor, enc_mask: torch.Tensor, lm_embeds: torch.Tensor, lm_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        batch = enc_ids.shape[0]
        features = self.encoder_features(enc_ids, enc_mask).to(lm_embeds.dtype)
        prefix = torch.tensor(self.prefix_ids, dtype=torch.long, device=self.device)
        prefix_embeds = self.embed(prefix).unsqueeze(0).expand(batch, -1, -1)
        embeds = torch.cat([prefix_embeds, features, lm_embeds], dim=1)
        ones = enc_mask.new_ones
        mask = torch.cat([ones(batch, len(self.prefix_ids)), enc_mask, ones(batch, 1), lm_mask], dim=1)
        return embeds, mask, len(self.prefix_ids) + features.shape[1]

    # ------------------------------------------------------------------------------------------------------------
    # Training
    def collate(self, examples: Sequence[Any], append_eos: bool = True) -> dict[str, torch.Tensor]:
        """Official labeled collation: encoder padded to the batch maximum; LM prompt + target right-padded."""
        proc = self.processor
        enc = self.enc_tok(
            [proc.encoder_template.format(text=e.encoder_text) for e in examples],
            padding=True,
            truncation=True,
            max_length=proc.max_encoder_length,
            return_tensors="pt",
        )
        prompt = self._lm_ids(proc.lm_prompt)
        budget = proc.max_lm_length - len(self.prefix_ids)
        eos = [self.lm_tok.eos_token_id] if append_eos and self.lm_tok.eos_token_id is not None else []
        rows, labels = [], []
        for e in examples:
            target = (self._lm_ids(e.target) + eos)[: max(0, budget - len(prompt))]
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        width = max(len(r) for r in rows)
        pad = self.lm_tok.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            lab[i, : len(lb)] = torch.tensor(lb)
        return {
            "enc_ids": enc["input_ids"],
            "enc_mask": enc["attention_mask"],
            "input_ids": ids,
            "attention_mask": mask,
            "labels": lab,
            "prefix_len": torch.tensor(len(self.prefix_ids)),  # for counting processed positions
        }

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over target tokens, logits of every position)."""
        embeds, mask, head_len = self._layout(
            batch["enc_ids"], batch["enc_mask"], self.embed(batch["input_ids"]), batch["attention_mask"]
        )
        hidden = self.decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        logits = self.head(hidden)
        labels = torch.cat(
            [batch["labels"].new_full((embeds.shape[0], head_len), -100), batch["labels"]], dim=1
        )
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        return loss, logits

    def real_lengths(self, batch: dict[str, torch.Tensor]) -> tuple[list[int], list[int], list[int]]:
        """Per-example real (encoder, LM, target) token counts, the LM counted as our layout has it (prefix + real
        encoder slots + end-of-encoder + prompt + target), so FLOPs and tokens compare like for like."""
        enc = batch["enc_mask"].sum(dim=1)
        lm = len(self.prefix_ids) + enc + 1 + batch["attention_mask"].sum(dim=1)
        targets = (batch["labels"] != -100).sum(dim=1)
        return enc.tolist(), lm.tolist(), targets.tolist()

    # ------------------------------------------------------------------------------------------------------------
    # Generation
    @torch.no_grad()
    def generate_one(
        self,
        text: str,
        lm_prompt: str,
        max_new_tokens: int,
        eos_ids: Sequence[int] = (),
        stop: Sequence[str] = (),
        min_new_tokens: int = 0,
        step_times: list[float] | None = None,
    ) -> list[int]:
        """Greedy continuation of one example; returns the new token ids. `step_times` (if given) receives the
        clock after every new token."""
        proc = self.processor
        enc = self.enc_tok(
            [proc.encoder_template.format(text=text)],
            truncation=True,
            max_length=proc.max_encoder_length,
            return_tensors="pt",
        ).to(self.device)
        prompt = torch.tensor([self._lm_ids(lm_prompt)], dtype=torch.long, device=self.device)
        embeds, mask, _ = self._layout(
            enc["input_ids"], enc["attention_mask"], self.embed(prompt), torch.ones_like(prompt)
        )
        cache = DynamicCache(config=self.model.lm.config)
        hidden = self.decoder(inputs_embeds=embeds, attention_mask=mask, cache=cache, use_cache=True)
        logits = self.head(hidden.last_hidden_state)  # every prefill position, as the official forward does
        # Official stop criteria: decode the last len(tokens(stop)) generated tokens at every step.
        stops = [(s, max(1, len(self._lm_ids(s)))) for s in stop]
        eos = set(eos_ids)
        new: list[int] = []
        while True:
            token = int(logits[0, -1].argmax())  # a host sync, so the clock below is accurate on GPU too
            new.append(token)
            if step_times is not None:
                step_times.append(time.perf_counter())
            if len(new) >= max_new_tokens:
                break
            if len(new) >= min_new_tokens:
                if token in eos:
                    break
                if any(s in self.lm_tok.decode(new[-n:]) for s, n in stops):
                    break
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
            step = torch.tensor([[token]], device=self.device)
            hidden = self.decoder(input_ids=step, attention_mask=mask, cache=cache, use_cache=True)
            logits = self.head(hidden.last_hidden_state)
        return new


class ReferenceBackend(LangBridgeBackend):
    """The evaluation package's LangBridge backend with generation replaced by the official approach
    (one example at a time); prompts, stop handling and scoring are shared with our backend."""

    kind = "official-reference"

    def __init__(self, model: Any, processor: Any, **kwargs: Any):
        super().__init__(model, processor, **kwargs)
        self.reference = OfficialReference(model, processor)
        self.generated_tokens = 0

    @torch.no_grad()
    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, str]]:
        for i, r in enumerate(requests):
            if r.do_sample:
                raise ValueError("The official-approach reference implements greedy decoding only.")
            new = self.reference.generate_one(
                r.encoder_text,
                resolve_lm_prompt(r, self.processor.lm_prompt),
                r.max_new_tokens,
                eos_ids=self._eos,
                stop=r.stop,
            )
            self.generated_tokens += len(new)
            text = self.processor.lm_tokenizer.decode(new, skip_special_tokens=True)
            yield i, truncate_at_stop(text, r.stop)
