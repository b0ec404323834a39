"""What a task asks of a model: generation and log-likelihood requests, and the prompt style they follow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..runtime.prompts import INSTRUCTION_TEMPLATES
from ..runtime.requests import GenerationRequest, LoglikelihoodRequest, resolve_lm_prompt

__all__ = [
    "GenerationRequest",
    "LoglikelihoodRequest",
    "PromptStyle",
    "INSTRUCTION_TEMPLATES",
    "make_generation",
    "resolve_lm_prompt",
]


@dataclass
class PromptStyle:
    """How prompts are laid out for one model.

    instruct: zero-shot with the LM's instruction format (instruction-tuned LMs); False = few-shot plain
        text (base LMs).
    chat: wraps a user message into the LM's chat template, ending at the assistant-turn opener
        (LM-alone baseline only; a LangBridge checkpoint's processor holds its own lm_prompt).
    template: an INSTRUCTION_TEMPLATES format string with {user}; used instead of `chat` when set.
    encoder_template: a format string with {user} for what a LangBridge encoder reads in instruct mode
        (e.g. the MetaMath/Alpaca wording); None = the bare question.
    """

    instruct: bool
    chat: Callable[[str], str] | None = None
    template: str | None = None
    encoder_template: str | None = None

    def wrap(self, user: str) -> str:
        """The full LM-alone text of an instruct prompt."""
        if self.template is not None:
            return self.template.format(user=user)
        if self.chat is not None:
            return self.chat(user)
        return user

    def wrap_encoder(self, user: str) -> str:
        return self.encoder_template.format(user=user) if self.encoder_template is not None else user

    def describe(self) -> str:
        if not self.instruct:
            return "base (few-shot)"
        if self.template is not None or self.encoder_template is not None:
            return "instruct (template)"
        return "instruct (chat template)" if self.chat is not None else "instruct (plain)"


def make_generation(
    style: PromptStyle,
    user: str,
    *,
    answer_prefix: str = "",
    instruct_prefix: str = "",
    stop: tuple[str, ...] = (),
    max_new_tokens: int = 256,
    **sampling,
) -> GenerationRequest:
    """Lay out one prompt in the model's style.

    base: the whole text (exemplars, question, answer prefix) is one plain prompt; a LangBridge encoder
        reads all of it and the LM continues after its default lm_prompt, as in the paper's evaluation.
    instruct: the question is the user turn; the LM alone gets it wrapped in its chat template, a
        LangBridge encoder reads it bare and the LM starts at the checkpoint's lm_prompt. `instruct_prefix`
        starts the assistant answer in both.
    """
    if style.instruct:
        full = style.wrap(user) + instruct_prefix
        return GenerationRequest(
            encoder_text=style.wrap_encoder(user),
            full_prompt=full,
            lm_suffix=instruct_prefix,
            stop=tuple(stop),
            max_new_tokens=max_new_tokens,
            **sampling,
        )
    text = user + answer_prefix
    return GenerationRequest(
        encoder_text=text, full_prompt=text, stop=tuple(stop), max_new_tokens=max_new_tokens, **sampling
    )
