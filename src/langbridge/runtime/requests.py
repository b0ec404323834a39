"""What a model is asked: a generation or a target log-likelihood. The runtime's input types, shared by evaluation
tasks, the server and the command line."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GenerationRequest", "LoglikelihoodRequest", "resolve_lm_prompt"]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation.

    encoder_text: what a LangBridge encoder reads (the question, possibly with few-shot exemplars).
    full_prompt: the whole prompt as text for the LM alone (chat template applied when instruct).
    lm_prompt: LM text after the soft tokens for LangBridge; None means the processor's default lm_prompt.
    lm_suffix: text appended after that LM prompt (the start of the answer, e.g. "Let's think step by step.").
    lm_instruction: LM text between the soft tokens and that LM prompt (a task instruction the LM reads).
    """

    encoder_text: str
    full_prompt: str
    lm_prompt: str | None = None
    lm_suffix: str = ""
    lm_instruction: str = ""
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    def generation_key(self) -> tuple:
        """Requests with the same key can share one `generate` call."""
        return (self.stop, self.max_new_tokens, self.do_sample, self.temperature, self.top_p)


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context). A LangBridge encoder reads the context and the LM scores the
    continuation after `lm_instruction` and its lm_prompt; the LM alone reads context (or `full_context`, when
    the task lays out its own prompt) + continuation as one text."""

    context: str
    continuation: str
    lm_prompt: str | None = None
    lm_instruction: str = ""
    full_context: str | None = None


def resolve_lm_prompt(request: GenerationRequest | LoglikelihoodRequest, default: str) -> str:
    """The LM text a LangBridge model puts after the soft tokens for this request."""
    base = default if request.lm_prompt is None else request.lm_prompt
    return request.lm_instruction + base + getattr(request, "lm_suffix", "")
