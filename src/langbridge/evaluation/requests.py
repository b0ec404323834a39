"""What a task asks of a model: generation and log-likelihood requests, and the prompt style they follow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "GenerationRequest",
    "LoglikelihoodRequest",
    "PromptStyle",
    "INSTRUCTION_TEMPLATES",
    "make_generation",
    "resolve_lm_prompt",
]


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


# Public instruction formats used in the paper's evaluation (MetaMath = Alpaca wording; Orca 2 = ChatML).
INSTRUCTION_TEMPLATES: dict[str, str] = {
    "metamath": (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{user}\n\n### Response:\n"
    ),
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{user}\n\n### Response:\n"
    ),
    "orca": (
        "<|im_start|>system\nYou are an AI assistant. User will you give you a task. Your goal is to "
        "complete the task as faithfully as you can. While performing the task think step-by-step and "
        "justify your steps.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "chatml": "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
}


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


def resolve_lm_prompt(request: GenerationRequest | LoglikelihoodRequest, default: str) -> str:
    """The LM text a LangBridge backend puts after the soft tokens for this request."""
    base = default if request.lm_prompt is None else request.lm_prompt
    return request.lm_instruction + base + getattr(request, "lm_suffix", "")
