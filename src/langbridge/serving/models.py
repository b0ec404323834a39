"""The models a server holds: a runtime model (`langbridge.runtime`: prompt layout, prefill) driven by a `ContinuousBatchingEngine`,
with the limits, token counts and per-token scoring the OpenAI endpoints need.

`langbridge serve CKPT` serves the LangBridge checkpoint and, from the same weights, its LM alone (the checkpoint
holds the frozen LM, so it is not loaded twice); `--lm-only MODEL` serves a plain causal LM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..continuous_batching import forward_next_token_logits, stop_string_checker
from ..engine import ContinuousBatchingEngine, EngineRequest
from ..runtime import CausalLMRunner, GenerationRequest, LangBridgeRunner, is_langbridge_checkpoint, load
from ..utils import resolve_model_name

__all__ = ["RequestError", "ServedModel", "Choice", "GenerationStream", "load_served_models"]

# Scoring (echo + logprobs) rows per forward pass.
SCORE_BATCH = 16


class RequestError(ValueError):
    """A request the model cannot serve as asked: becomes a 400 (or `status`) OpenAI error."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass
class Choice:
    """One answer being generated: token ids and the text streamed so far (cut at the first stop string)."""

    index: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already handed out
    finish_reason: str | None = None


class GenerationStream:
    """The (choice, new text) events of one submitted request; `aclose()` cancels it in the engine even when
    iteration never started."""

    def __init__(self, request: EngineRequest, events: AsyncGenerator[tuple[Choice, str], None]):
        self.request = request
        self._events = events

    def __aiter__(self) -> AsyncIterator[tuple[Choice, str]]:
        return self._events

    async def aclose(self) -> None:
        self.request.cancel()
        await self._events.aclose()


@dataclass
class ServedModel:
    """One model id on the server. `kind` is "langbridge" (the encoder reads the text) or "lm" (the LM alone)."""

    id: str
    kind: str
    backend: LangBridgeRunner | CausalLMRunner
    max_batch: int = 32
    max_queue: int = 256
    engine: ContinuousBatchingEngine = field(init=False)

    def __post_init__(self) -> None:
        self.tokenizer = self.backend._lm_tokenizer
        lm = self.backend.model.lm if self.kind == "langbridge" else self.backend.model
        positions = getattr(lm.config, "max_position_embeddings", None) or getattr(
            lm.config, "n_positions", None
        )
        self.context_length = int(positions or 2048)
        self.engine = ContinuousBatchingEngine(
            self.backend.model,
            self.backend._prefill,
            self.backend._eos,
            max_batch=self.max_batch,
            max_queue=self.max_queue,
            name=f"engine-{self.id}",
        )

    # -- prompts ------------------------------------------------------------------------------------------
    def chat_request(self, messages: Sequence[dict[str, str]]) -> GenerationRequest:
        """LangBridge: the encoder reads the messages' text (one message: the user's question) and the LM writes
        after the checkpoint's lm_prompt. LM alone: the messages in the LM's chat template."""
        encoder_text = "\n\n".join(m["content"] for m in messages)
        if getattr(self.tokenizer, "chat_template", None):
            full = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        else:
            full = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return GenerationRequest(encoder_text=encoder_text, full_prompt=full)

    def completion_request(self, prompt: str) -> GenerationRequest:
        """The prompt as plain text: the encoder reads it (LangBridge) or the LM continues it (LM alone)."""
        return GenerationRequest(encoder_text=prompt, full_prompt=prompt)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens the LM reads for `request` (soft tokens count one each); raises RequestError past a limit."""
        if isinstance(self.backend, LangBridgeRunner):
            proc = self.backend.processor
            text = proc.encoder_template.format(text=request.encoder_text)
            encoder = len(proc.encoder_tokenizer(text, verbose=False)["input_ids"])
            if encoder > proc.max_encoder_length:
                raise RequestError(
                    f"The input is {encoder} encoder tokens; this model accepts at most "
                    f"max_encoder_length={proc.max_encoder_length}.",
                    "messages",
                )
            return len(proc._prefix_ids) + encoder + 1 + len(proc._lm_ids(proc.lm_prompt))
        return len(self.backend._encode(request.full_prompt))

    def check_budget(self, prompt_tokens: int, max_tokens: int | None, default: int) -> int:
        """max_tokens for a request (`default` clipped to the room left when not given)."""
        room = self.context_length - prompt_tokens
        if room < 1:
            raise RequestError(
                f"The input is {prompt_tokens} tokens; this model's context length is {self.context_length}, "
                "leaving no room for an answer.",
                "messages",
            )
        if max_tokens is None:
            return min(default, room)
        if max_tokens < 1:
            raise RequestError(f"max_tokens must be >= 1, got {max_tokens}.", "max_tokens")
        if max_tokens > room:
            raise RequestError(
                f"max_tokens={max_tokens} is too large: the input is {prompt_tokens} tokens and this model's "
                f"context length is {self.context_length}, so at most {room} tokens can be generated.",
                "max_tokens",
            )
        return max_tokens

    # -- generation ---------------------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        max_tokens: int,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> GenerationStream:
        """Submits the request to the engine at once (raising `QueueFull` when the queue is full) and returns an
        iterator of (choice, new text) as text becomes final, and (choice, "") when a choice ends
        (`choice.finish_reason` set). Leaving the iteration early cancels the request in the engine."""
        if n > self.max_batch:
            raise RequestError(
                f"n={n} is more than this server decodes at once (--max-batch {self.max_batch}).", "n"
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        stops = [s for s in stop if s]
        # The same tail-window check continuous batching uses, for this one request.
        check_stops = stop_string_checker(self.tokenizer, [stops])

        def hit_stop(ids: list[int]) -> bool:
            return check_stops(0, ids)

        def put(kind: str, choice: int, value: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, choice, value))

        engine_request = EngineRequest(
            payload=request,
            max_new_tokens=max_tokens,
            n=n,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            hit_stop=hit_stop if stops else None,
            on_token=lambda c, t: put("token", c, t),
            on_finish=lambda c, reason: put("finish", c, reason),
            on_error=lambda err: put("error", -1, err),
        )
        self.engine.submit(engine_request)
        return GenerationStream(engine_request, self._events(engine_request, events, n, stops))

    async def _events(
        self,
        engine_request: EngineRequest,
        events: asyncio.Queue[tuple[str, int, Any]],
        n: int,
        stops: list[str],
    ) -> AsyncGenerator[tuple[Choice, str], None]:
        choices = [Choice(i) for i in range(n)]
        hold = max((len(s) for s in stops), default=1) - 1  # a stop string may still be completing
        left = n
        try:
            while left:
                kind, index, value = await events.get()
                if kind == "error":
                    raise value
                choice = choices[index]
                if kind == "token":
                    choice.ids.append(value)
                    text = self.tokenizer.decode(choice.ids, skip_special_tokens=True)
                    cut = min((text.find(s) for s in stops if s in text), default=-1)
                    choice.text = text if cut < 0 else text[:cut]
                    end = len(choice.text) if cut >= 0 else len(choice.text) - hold
                    while end > choice.sent and choice.text[end - 1] == "\ufffd":  # an incomplete character
                        end -= 1
                else:
                    choice.finish_reason = value
                    end = len(choice.text)
                    left -= 1
                if end > choice.sent:
                    new, choice.sent = choice.text[choice.sent : end], end
                    yield choice, new
                if kind == "finish":
                    yield choice, ""
        finally:
            engine_request.cancel()

    # -- scoring: echo + logprobs -------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, ids: list[int]) -> tuple[list[float | None], list[dict[int, float]], int, float]:
        """Log-probability of each prompt token given the tokens before it, the top-1 alternative at each
        position, and the greedy next token after the prompt with its log-probability.

        LM alone: one forward pass over the ids (after a BOS when the tokenizer adds one; else the first token
        has no log-probability). LangBridge: token i is scored by the LM right after the checkpoint's lm_prompt
        while the encoder reads the text of tokens 0..i-1, as `langbridge eval` scores a one-token continuation;
        the first token has no log-probability."""
        if not ids:
            raise RequestError("The prompt is empty.", "prompt")
        if isinstance(self.backend, LangBridgeRunner):
            proc = self.backend.processor
            contexts = [
                self.tokenizer.decode(ids[:i], skip_special_tokens=True) for i in range(1, len(ids) + 1)
            ]
            rows = []
            for start in range(0, len(contexts), SCORE_BATCH):
                chunk = [self.backend._encoder_text(c) for c in contexts[start : start + SCORE_BATCH]]
                batch = proc(chunk, padding_side="left").to(self.backend.device)
                inputs = dict(batch)
                input_ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
                logits, _ = forward_next_token_logits(self.backend.model, input_ids, mask, None, **inputs)
                rows.append(torch.log_softmax(logits.float(), -1))
            logp = torch.cat(rows)  # row i: distribution of token i + 1
            first: float | None = None
        else:
            bos = self.tokenizer.bos_token_id
            prepend = self.backend._bos and ids[0] != bos
            seq = torch.tensor([([bos] if prepend else []) + ids], device=self.backend.device)
            out = self.backend.model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False)
            logp = torch.log_softmax(out.logits[0].float(), -1)
            if prepend:
                first = float(logp[0, ids[0]])
                logp = logp[1:]
            else:
                first = None
        target = torch.tensor(ids[1:], device=logp.device)
        token_lp = logp[:-1].gather(-1, target.unsqueeze(-1)).squeeze(-1).tolist() if len(ids) > 1 else []
        top_lp, top_id = logp.max(-1)
        tops = [{int(t): float(v)} for t, v in zip(top_id.tolist(), top_lp.tolist(), strict=True)]
        return [first, *token_lp], [{}, *tops[:-1]], int(top_id[-1]), float(top_lp[-1])


def load_served_models(
    model: str,
    lm_only: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    max_batch: int = 32,
    max_queue: int = 256,
    name: str | None = None,
) -> list[ServedModel]:
    """The models `langbridge serve MODEL` holds: a LangBridge checkpoint and its LM alone, or (`lm_only`) a
    plain LM (a LangBridge checkpoint's own LM when MODEL is one). Model ids: the name of MODEL (of its run
    directory for `RUN/final`) or `name`, and `<id>/lm-alone` for the LM of a checkpoint."""
    path = Path(str(model).rstrip("/"))
    # A training run's checkpoint is OUTPUT_DIR/final: name it after the run.
    label = (
        name or (path.parent.name if path.name == "final" and path.parent.name else path.name) or str(model)
    )
    served: list[ServedModel] = []
    plain_lm = lm_only and not is_langbridge_checkpoint(resolve_model_name(model))
    runner = load(
        model, lm_only=plain_lm, device=device, dtype=dtype, name=label, batch_size=max_batch, purpose="serve"
    )
    if plain_lm:
        served.append(ServedModel(label, "lm", runner, max_batch, max_queue))
    else:
        assert isinstance(runner, LangBridgeRunner)
        # Over-long inputs keep their end, as in evaluation.
        runner.processor.encoder_tokenizer.truncation_side = "left"
        if not lm_only:
            served.append(ServedModel(label, "langbridge", runner, max_batch, max_queue))
        lm_name = f"{label}/lm-alone"
        lm = CausalLMRunner(
            runner.model.lm, runner.processor.lm_tokenizer, batch_size=max_batch, name=lm_name
        )
        served.append(ServedModel(lm_name, "lm", lm, max_batch, max_queue))
    for m in served:
        if not m.backend.continuous_batching:
            raise ValueError(
                f"{m.id}: this LM's KV cache cannot be joined (sliding-window, recurrent or encoder-decoder), "
                "so it cannot be served with continuous batching."
            )
    return served
