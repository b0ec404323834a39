"""Model backends for evaluation: a LangBridge model, or a plain causal LM (the LM-alone baseline).

Both take the same requests: a LangBridge encoder reads `encoder_text` and its LM continues after the
checkpoint's lm_prompt; the LM alone reads `full_prompt` as tokens. Requests are batched sorted by length
with left padding, identical prompts run once (sampled copies come from `num_return_sequences`, so the
encoder runs once per example), and outputs are cut at the stop strings. Greedy requests are decoded with
continuous batching (langbridge/continuous_batching.py) where the LM's cache allows it, else with `generate`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import GenerationConfig

from ..continuous_batching import (
    continuous_greedy,
    eos_token_ids,
    prefill_batch,
    stop_string_checker,
    supports_continuous_batching,
)
from ..utils import check_model_source, model_load_error, resolve_model_name
from .requests import (
    INSTRUCTION_TEMPLATES,
    GenerationRequest,
    LoglikelihoodRequest,
    PromptStyle,
    resolve_lm_prompt,
)
from .scoring import truncate_at_stop

__all__ = ["EvalModel", "LangBridgeBackend", "CausalLMBackend", "load_backend", "resolve_dtype"]

PROMPT_STYLES = ("auto", "instruct", "base")


@runtime_checkable
class EvalModel(Protocol):
    """What the runner needs from a model. A backend may also offer `generate_stream(requests)`, yielding
    (index, output) as answers complete; the runner then hands it a task's whole queue at once."""

    name: str
    kind: str

    def prompt_style(self, style: str = "auto", instruction_template: str | None = None) -> PromptStyle: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]: ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]: ...


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """ "auto" (or None): bfloat16 on CUDA, float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r} is not supported; use auto, float32, bfloat16 or float16.")
    return table[dtype]


def _template(name: str | None) -> str | None:
    if name is None:
        return None
    if name in INSTRUCTION_TEMPLATES:
        return INSTRUCTION_TEMPLATES[name]
    if "{user}" in name:
        return name  # a custom format string
    raise ValueError(
        f"Unknown instruction template {name!r}; use one of {sorted(INSTRUCTION_TEMPLATES)} or a format string "
        "containing {user}."
    )


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}.")


def _chat_function(tokenizer: Any):
    if getattr(tokenizer, "chat_template", None) is None:
        return None

    def chat(user: str) -> str:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )

    return chat


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


class _Backend:
    """Shared batching: group by generation settings, sort by length, dedupe identical prompts."""

    name: str
    kind: str
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

    def _prompt_key(self, request: GenerationRequest) -> tuple:
        raise NotImplementedError

    def _prompt_length(self, request: GenerationRequest) -> int:
        raise NotImplementedError

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

    def _loglikelihood_length(self, request: LoglikelihoodRequest) -> int:
        raise NotImplementedError

    def _generate_batch(self, requests: list[GenerationRequest], n: int) -> list[str]:
        raise NotImplementedError

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        for i, text in self.generate_stream(requests):
            results[i] = text
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def generate_stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, str]]:
        """(index, output) for every request, as outputs complete: pass the whole queue, so that continuous
        batching can keep its batch full."""
        requests = list(requests)
        # Identical prompts (e.g. the n samples of one HumanEval problem) are generated together.
        unique: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            unique.setdefault((r.generation_key(), self._prompt_key(r)), []).append(i)

        def done(idxs: list[int], out: str) -> Iterator[tuple[int, str]]:
            for i in idxs:
                yield i, truncate_at_stop(out, requests[i].stop)

        groups: dict[tuple, list[list[int]]] = {}
        greedy: list[list[int]] = []
        for (gen_key, _), idxs in unique.items():
            if self.continuous_batching and not requests[idxs[0]].do_sample:
                greedy.append(idxs)  # greedy rows of any budget and stop strings share one running batch
            else:
                groups.setdefault(gen_key, []).append(idxs)
        if greedy:
            greedy.sort(key=lambda idxs: -self._prompt_length(requests[idxs[0]]))
            for j, out in self._generate_continuous([requests[idxs[0]] for idxs in greedy]):
                yield from done(greedy[j], out)
        for members in groups.values():
            # Longest first: a batch that does not fit in memory fails at once, and padding stays small.
            members.sort(key=lambda idxs: -self._prompt_length(requests[idxs[0]]))
            sampled = requests[members[0][0]].do_sample
            copies = {len(idxs) for idxs in members}
            if sampled and len(copies) == 1 and (n := copies.pop()) > 1:
                per_call = max(1, self.batch_size // n)
                for start in range(0, len(members), per_call):
                    chunk = members[start : start + per_call]
                    outs = self._generate_batch([requests[idxs[0]] for idxs in chunk], n)
                    for j, idxs in enumerate(chunk):
                        for s, i in enumerate(idxs):
                            yield i, truncate_at_stop(outs[j * n + s], requests[i].stop)
                continue
            if sampled:
                # Uneven copy counts: every copy is its own row.
                members = [[i] for idxs in members for i in idxs]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                outs = self._generate_batch([requests[idxs[0]] for idxs in chunk], 1)
                for out, idxs in zip(outs, chunk, strict=True):
                    yield from done(idxs, out)

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Next-token logits, KV cache and attention mask of the left-padded prompts."""
        raise NotImplementedError

    def _generate_continuous(self, requests: list[GenerationRequest]) -> Iterator[tuple[int, str]]:
        """Greedy outputs with continuous batching, as (index into `requests`, text) in order of completion."""
        tokenizer = self._lm_tokenizer
        answers = continuous_greedy(
            self.model,
            lambda idx: self._prefill([requests[i] for i in idx]),
            [r.max_new_tokens for r in requests],
            self.batch_size,
            self._eos,
            stop_string_checker(tokenizer, [r.stop for r in requests]),
        )
        for j, ids in answers:
            yield j, tokenizer.decode(ids, skip_special_tokens=True)

    def _generation_config(
        self, request: GenerationRequest, n: int, pad_id: int, eos_ids: list[int]
    ) -> GenerationConfig:
        # A fresh config: the checkpoint's own sampling defaults must not leak into greedy evaluation.
        kwargs: dict[str, Any] = dict(
            max_new_tokens=request.max_new_tokens,
            do_sample=request.do_sample,
            num_return_sequences=n,
            pad_token_id=pad_id,
            eos_token_id=eos_ids or None,
            stop_strings=list(request.stop) or None,
        )
        if request.do_sample:
            kwargs.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        return GenerationConfig(**kwargs)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        return [lp for lp, _, _ in self.loglikelihood_details(requests)]

    def loglikelihood_with_greedy(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, whether greedy decoding would produce the continuation)."""
        return [(lp, greedy) for lp, greedy, _ in self.loglikelihood_details(requests)]

    @torch.no_grad()
    def loglikelihood_details(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[tuple[float, bool, int]]:
        """(sum of continuation log-probs, greedy would produce it, number of continuation tokens scored)."""
        requests = list(requests)
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].context), requests[i].context))
        results: list[tuple[float, bool, int] | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, value in zip(chunk, self._loglikelihood_batch([requests[i] for i in chunk]), strict=True):
                results[i] = value
        return results  # type: ignore[return-value]

    def _loglikelihood_batch(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool, int]]:
        raise NotImplementedError

    @staticmethod
    def _score(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, bool, int]]:
        """Summed log-probs of the labelled positions, whether they are all greedy, and their number;
        logits[:, t] predicts labels[:, t + 1]."""
        logits = logits[:, :-1].float()
        labels = labels[:, 1:]
        mask = labels != -100
        logp = torch.log_softmax(logits, dim=-1)
        token_lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total = (token_lp * mask).sum(dim=1)
        greedy = ((logits.argmax(dim=-1) == labels) | ~mask).all(dim=1)
        counts = mask.sum(dim=1)
        return [(float(t), bool(g), int(n)) for t, g, n in zip(total, greedy, counts, strict=True)]

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "device": str(self.device),
            "batch_size": self.batch_size,
            "continuous_batching": self.continuous_batching,
        }


class LangBridgeBackend(_Backend):
    """A LangBridgeModel with its LangBridgeProcessor."""

    kind = "langbridge"

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
        # Over-long few-shot prompts keep their end (the question) rather than their start.
        self.processor.encoder_tokenizer.truncation_side = "left"
        enc_tok = processor.encoder_tokenizer
        # What the encoder reads for an empty context: its end-of-sequence token alone, the counterpart of a
        # plain LM conditioning on EOS (the processor refuses empty text).
        self._empty_context = next(
            (t for t in (enc_tok.sep_token, enc_tok.eos_token, enc_tok.cls_token, enc_tok.bos_token) if t),
            ".",
        )

    def _encoder_text(self, text: str) -> str:
        return text if text.strip() else self._empty_context

    def prompt_style(self, style: str = "auto", instruction_template: str | None = None) -> PromptStyle:
        _check_style(style)
        template = _template(instruction_template)
        if template is not None and self.processor.encoder_template != "{text}":
            raise ValueError(
                f"This checkpoint's processor already wraps the encoder input ({self.processor.encoder_template!r}); "
                "drop --instruction-template, or save the processor with encoder_template='{text}'."
            )
        lm_tok = self.processor.lm_tokenizer
        instruct = style == "instruct" or (
            style == "auto"
            and (template is not None or bool(self.processor.lm_prompt) or lm_tok.chat_template is not None)
        )
        return PromptStyle(instruct=instruct, encoder_template=template)

    def describe_request(self, request: GenerationRequest | LoglikelihoodRequest) -> dict[str, str]:
        """What this model read, for the predictions file."""
        text = request.context if isinstance(request, LoglikelihoodRequest) else request.encoder_text
        return {"prompt": text, "lm_prompt": resolve_lm_prompt(request, self.processor.lm_prompt)}

    def _prompt_key(self, request: GenerationRequest) -> tuple:
        return (request.encoder_text, resolve_lm_prompt(request, self.processor.lm_prompt))

    def _prompt_length(self, request: GenerationRequest) -> int:
        return self._count_tokens(self.processor.encoder_tokenizer, request.encoder_text)

    def _loglikelihood_length(self, request: LoglikelihoodRequest) -> int:
        proc = self.processor
        return self._count_tokens(proc.encoder_tokenizer, request.context) + self._count_tokens(
            proc.lm_tokenizer, request.continuation
        )

    def _prompt_batch(self, requests: list[GenerationRequest]) -> Any:
        proc = self.processor
        return proc(
            [self._encoder_text(r.encoder_text) for r in requests],
            lm_prompts=[resolve_lm_prompt(r, proc.lm_prompt) for r in requests],
            padding_side="left",
        ).to(self.device)

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        return prefill_batch(self.model, self._prompt_batch(requests))

    def _generate_batch(self, requests: list[GenerationRequest], n: int) -> list[str]:
        proc = self.processor
        batch = self._prompt_batch(requests)
        first = requests[0]
        ids = self.model.generate(
            **batch,
            generation_config=self._generation_config(first, n, proc.lm_tokenizer.pad_token_id, self._eos),
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
        return self._score(out.logits, batch["labels"])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "processor": self.processor.to_dict()}


class CausalLMBackend(_Backend):
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
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(
                    "The LM tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token."
                )
            tokenizer.pad_token = tokenizer.eos_token  # pads are masked out
        self._bos = _adds_bos(tokenizer)
        positions = getattr(lm.config, "max_position_embeddings", None) or getattr(
            lm.config, "n_positions", None
        )
        self.max_length = int(positions or 2048)

    def prompt_style(self, style: str = "auto", instruction_template: str | None = None) -> PromptStyle:
        _check_style(style)
        template = _template(instruction_template)
        chat = _chat_function(self.tokenizer)
        instruct = style == "instruct" or (style == "auto" and (template is not None or chat is not None))
        return PromptStyle(instruct=instruct, chat=chat, template=template)

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # Chat templates may already start with BOS; do not add a second one.
        if self._bos and not (ids and ids[0] == self.tokenizer.bos_token_id):
            ids = [self.tokenizer.bos_token_id] + ids
        return ids

    def describe_request(self, request: GenerationRequest | LoglikelihoodRequest) -> dict[str, str]:
        if isinstance(request, LoglikelihoodRequest):
            return {"prompt": request.context if request.full_context is None else request.full_context}
        return {"prompt": request.full_prompt}

    def _prompt_key(self, request: GenerationRequest) -> tuple:
        return (request.full_prompt,)

    def _prompt_length(self, request: GenerationRequest) -> int:
        return self._count_tokens(self.tokenizer, request.full_prompt)

    def _loglikelihood_length(self, request: LoglikelihoodRequest) -> int:
        return self._count_tokens(self.tokenizer, request.context + request.continuation)

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r)
                mask[i, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prompt_ids(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        # Keep the end of an over-long prompt, next to the answer.
        return self._left_pad(
            [self._encode(r.full_prompt)[-max(1, self.max_length - r.max_new_tokens) :] for r in requests]
        )

    def _prefill(self, requests: list[GenerationRequest]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        input_ids, attention_mask = self._prompt_ids(requests)
        return prefill_batch(self.model, {"input_ids": input_ids, "attention_mask": attention_mask})

    def _generate_batch(self, requests: list[GenerationRequest], n: int) -> list[str]:
        first = requests[0]
        input_ids, attention_mask = self._prompt_ids(requests)
        ids = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._generation_config(first, n, self.tokenizer.pad_token_id, self._eos),
            tokenizer=self.tokenizer,  # needed for stop strings
        )
        return self.tokenizer.batch_decode(ids[:, input_ids.shape[1] :], skip_special_tokens=True)

    def _loglikelihood_batch(self, requests: list[LoglikelihoodRequest]) -> list[tuple[float, bool, int]]:
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
                ctx_ids = [
                    self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self._eos[0]
                ]
                whole = []
            # Tokenizing jointly keeps the boundary as the LM saw such text in training; fall back to
            # separate tokenization when the joint one does not start with the context tokens.
            if whole[: len(ctx_ids)] == ctx_ids and len(whole) > len(ctx_ids):
                cont_ids = whole[len(ctx_ids) :]
            else:
                cont_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont_ids:
                raise ValueError(f"Continuation {r.continuation!r} is empty after tokenization.")
            seq = (ctx_ids + cont_ids)[-self.max_length :]
            n_cont = min(len(cont_ids), len(seq) - 1)
            rows.append(seq)
            labels.append([-100] * (len(seq) - n_cont) + seq[len(seq) - n_cont :])
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        lab = torch.full_like(ids, -100)
        for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            lab[i, : len(lb)] = torch.tensor(lb)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        return self._score(out.logits, lab.to(self.device))


def _is_langbridge_checkpoint(source: str) -> bool:
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        try:
            return json.loads(config_file.read_text()).get("model_type") == "langbridge"
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    if Path(source).exists():
        return False
    try:
        from transformers import AutoConfig

        import langbridge  # noqa: F401  (registers the langbridge model type)

        return AutoConfig.from_pretrained(source).model_type == "langbridge"
    except Exception:
        return False


def load_backend(
    model: str | os.PathLike,
    lm_only: bool = False,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str | None = None,
    name: str | None = None,
) -> EvalModel:
    """Load MODEL for evaluation: a LangBridge checkpoint directory (or hub id), or with `lm_only` a plain
    causal LM (path, hub id, or a `langbridge.pretrained` alias such as smollm2-135m-instruct)."""
    spec = str(model)
    check_model_source(spec)  # a missing path or an offline hub id: say so before transformers guesses
    source = resolve_model_name(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = resolve_dtype(dtype, device)
    label = name or Path(spec).name or spec
    if lm_only:
        if _is_langbridge_checkpoint(source):
            raise ValueError(
                f"{spec} is a LangBridge checkpoint; --lm-only expects a plain causal LM. For the LM-alone baseline "
                "pass the checkpoint's LM (its config's lm_name_or_path)."
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as err:
            if Path(source).is_dir():
                raise FileNotFoundError(f"Could not load a causal LM from {spec!r}: {err}") from err
            raise FileNotFoundError(model_load_error(spec, err)) from err
        return CausalLMBackend(lm, tokenizer, batch_size=batch_size, name=label, device=device)
    if not _is_langbridge_checkpoint(source):
        if not Path(source).exists():
            raise FileNotFoundError(
                f"{spec}: no such directory, and no LangBridge checkpoint by that name on the hub (or the hub is "
                "unreachable). Pass a saved LangBridge checkpoint directory, or --lm-only for a plain causal LM."
            )
        raise ValueError(
            f"{spec} is not a LangBridge checkpoint (no config.json with model_type 'langbridge'). Pass --lm-only to "
            "evaluate it as a plain causal LM (the LM-alone baseline), or point at a trained LangBridge directory."
        )
    from .. import LangBridgeModel, LangBridgeProcessor

    lb_model = LangBridgeModel.from_pretrained(source, dtype=torch_dtype)
    processor = LangBridgeProcessor.from_pretrained(source)
    return LangBridgeBackend(lb_model, processor, batch_size=batch_size, name=label, device=device)
