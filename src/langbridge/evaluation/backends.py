"""Evaluation models: adapters from task requests to the runtime (`langbridge.runtime`).

A LangBridge model reads `encoder_text` with its encoder and its LM continues after the checkpoint's lm_prompt;
the LM alone reads `full_prompt` as tokens. Loading, prompt layout, sorting and batching by tokens, continuous
batching or `generate`, and target scoring are the runtime's; this module adds what evaluation needs on top: the
prompt style of a model, what it read for the predictions file, and the refusal of mismatched --lm-only use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..runtime import loading
from ..runtime.loading import resolve_dtype
from ..runtime.models import CausalLMRunner, LangBridgeRunner
from ..runtime.prompts import chat_function, instruction_template
from .requests import GenerationRequest, LoglikelihoodRequest, PromptStyle, resolve_lm_prompt

__all__ = ["EvalModel", "LangBridgeBackend", "CausalLMBackend", "load_backend", "resolve_dtype"]

PROMPT_STYLES = ("auto", "instruct", "base")


@runtime_checkable
class EvalModel(Protocol):
    """What the runner needs from a model. A backend may also offer `generate_stream(requests)`, yielding
    (index, output) as answers complete, and `loglikelihood_stream(groups)`; the runner then hands it a task's
    whole queue at once and the backend sorts and batches it."""

    name: str
    kind: str

    def prompt_style(self, style: str = "auto", instruction_template: str | None = None) -> PromptStyle: ...

    def generate(self, requests: list[GenerationRequest]) -> list[str]: ...

    def loglikelihood(self, requests: list[LoglikelihoodRequest]) -> list[float]: ...


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}.")


class LangBridgeBackend(LangBridgeRunner):
    """A LangBridgeModel with its LangBridgeProcessor."""

    keep_prompt_end = True  # over-long few-shot prompts keep their end (the question) rather than their start

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


class CausalLMBackend(CausalLMRunner):
    """A plain causal LM reading the whole prompt as text: the LM-alone baseline."""

    def prompt_style(self, style: str = "auto", instruction_template: str | None = None) -> PromptStyle:
        _check_style(style)
        template = _template(instruction_template)
        chat = chat_function(self.tokenizer)
        instruct = style == "instruct" or (style == "auto" and (template is not None or chat is not None))
        return PromptStyle(instruct=instruct, chat=chat, template=template)

    def describe_request(self, request: GenerationRequest | LoglikelihoodRequest) -> dict[str, str]:
        if isinstance(request, LoglikelihoodRequest):
            return {"prompt": request.context if request.full_context is None else request.full_context}
        return {"prompt": request.full_prompt}


def _template(name: str | None) -> str | None:
    return instruction_template(name)


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
    label = name or Path(spec).name or spec
    if lm_only:
        from ..utils import check_model_source, resolve_model_name

        check_model_source(spec)
        if loading.is_langbridge_checkpoint(resolve_model_name(spec)):
            raise ValueError(
                f"{spec} is a LangBridge checkpoint; --lm-only expects a plain causal LM. For the LM-alone baseline "
                "pass the checkpoint's LM (its config's lm_name_or_path)."
            )
    classes = (LangBridgeBackend, CausalLMBackend)
    options = dict(device=device, dtype=dtype, name=label, batch_size=batch_size, classes=classes)
    return loading.load(spec, lm_only=lm_only, purpose="evaluate", **options)  # type: ignore[return-value,arg-type]
