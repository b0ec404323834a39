"""Prompt helpers: the LM-alone chat prompt, BOS handling and the public instruction formats (one table, read by
evaluation's instruction templates and training's prompt templates)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..utils import adds_bos

__all__ = [
    "ALPACA_PREAMBLE",
    "ALPACA_INSTRUCTION",
    "ALPACA_RESPONSE",
    "CHATML_USER",
    "CHATML_ASSISTANT",
    "INSTRUCTION_TEMPLATES",
    "adds_bos",
    "chat_function",
    "chat_prompt",
    "instruction_template",
    "with_bos",
]

# The formats the paper's LMs were fine-tuned with. MetaMath = the Alpaca no-input prompt; Orca 2 = ChatML.
ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
ALPACA_INSTRUCTION = "### Instruction:\n"
ALPACA_RESPONSE = "### Response:"
CHATML_USER = "<|im_start|>user\n"
CHATML_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"
ORCA_SYSTEM = (
    "<|im_start|>system\nYou are an AI assistant. User will you give you a task. Your goal is to complete the task "
    "as faithfully as you can. While performing the task think step-by-step and justify your steps.<|im_end|>\n"
)

_ALPACA = ALPACA_PREAMBLE + ALPACA_INSTRUCTION + "{user}\n\n" + ALPACA_RESPONSE + "\n"
# Whole LM-alone prompts, format strings with {user}, used in the paper's evaluation.
INSTRUCTION_TEMPLATES: dict[str, str] = {
    "metamath": _ALPACA,
    "alpaca": _ALPACA,
    "orca": ORCA_SYSTEM + CHATML_USER + "{user}" + CHATML_ASSISTANT,
    "chatml": CHATML_USER + "{user}" + CHATML_ASSISTANT,
}


def instruction_template(name: str | None) -> str | None:
    """An INSTRUCTION_TEMPLATES entry by name, or a custom format string containing {user}."""
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


def chat_prompt(tokenizer: Any, user: str) -> str:
    """One user message in the LM's chat template, ending at the assistant-turn opener."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )


def chat_function(tokenizer: Any) -> Callable[[str], str] | None:
    """`chat_prompt` bound to `tokenizer`, or None when the LM has no chat template."""
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    return lambda user: chat_prompt(tokenizer, user)


def with_bos(tokenizer: Any, ids: list[int], bos: bool) -> list[int]:
    """`ids` after the LM's BOS when its tokenizer adds one (`bos`) and they do not already start with it
    (chat templates may)."""
    if bos and not (ids and ids[0] == tokenizer.bos_token_id):
        return [tokenizer.bos_token_id] + ids
    return ids
