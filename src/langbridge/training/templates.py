"""Prompt templates for labeled (instruction -> response) training.

LangBridge splits a prompt in two: the encoder reads the instruction (wrapped by `encoder_template`),
and the LM, after the bridged encoder states, reads `lm_prompt` (the response header) and then learns
the response. The templates below follow the formats the paper's LMs were fine-tuned with.
"""

from __future__ import annotations

from dataclasses import dataclass

# The formats themselves (Alpaca preamble, ChatML turns) are written once, in the runtime's prompt table.
from langbridge.runtime.prompts import (
    ALPACA_INSTRUCTION,
    ALPACA_PREAMBLE,
    ALPACA_RESPONSE,
    CHATML_ASSISTANT,
    CHATML_USER,
)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    encoder_template: str  # must contain "{text}"
    lm_prompt: str
    # LM text before the bridged states, after the LM's own BOS (if its tokenizer adds one). Chat formats open
    # the user turn here so the bridged states sit where the LM was trained to read the question.
    lm_prefix: str = ""
    # How an optional `input` field is appended to the instruction (Alpaca-style data).
    input_format: str = "{instruction}\n\n{input}"
    # How an optional system message is combined with the user turn on the encoder side.
    system_format: str = "{system}\n\n{user}"
    description: str = ""

    def encoder_text(self, instruction: str, input: str | None = None, system: str | None = None) -> str:
        """The text handed to the processor (which applies `encoder_template`)."""
        user = instruction.strip()
        if input and input.strip():
            user = self.input_format.format(instruction=user, input=input.strip())
        if system and system.strip():
            user = self.system_format.format(system=system.strip(), user=user)
        return user


TEMPLATES: dict[str, PromptTemplate] = {
    "plain": PromptTemplate(
        name="plain",
        encoder_template="{text}",
        lm_prompt="",
        description="instruction as is; the LM continues right after the bridged states",
    ),
    # MetaMath was fine-tuned with the Alpaca no-input prompt; the encoder reads up to the instruction and the
    # LM sees the response header it was trained to answer after.
    "metamath": PromptTemplate(
        name="metamath",
        encoder_template=ALPACA_PREAMBLE + ALPACA_INSTRUCTION + "{text}\n\n",
        lm_prompt=ALPACA_RESPONSE,
        description="MetaMath / Alpaca prompt: '### Instruction:' on the encoder side, '### Response:' for the LM",
    ),
    "alpaca": PromptTemplate(
        name="alpaca",
        encoder_template=ALPACA_PREAMBLE + ALPACA_INSTRUCTION + "{text}\n\n",
        lm_prompt=ALPACA_RESPONSE,
        input_format="{instruction}\n\n### Input:\n{input}",
        description="Stanford Alpaca prompt; a non-empty `input` becomes an '### Input:' block",
    ),
    # ChatML (Orca 2, SmolLM2-Instruct, Qwen): the bridged states stand for the user turn, so the LM continues
    # with the end of that turn and the assistant header.
    "chatml": PromptTemplate(
        name="chatml",
        encoder_template="{text}",
        lm_prompt=CHATML_ASSISTANT,
        lm_prefix=CHATML_USER,
        description="ChatML: LM sees '<|im_start|>user\\n' [bridged (system +) user message] "
        "'<|im_end|>\\n<|im_start|>assistant\\n'",
    ),
    "orca2": PromptTemplate(
        name="orca2",
        encoder_template="{text}",
        lm_prompt=CHATML_ASSISTANT,
        lm_prefix=CHATML_USER,
        description="Orca 2 (ChatML) - same split as chatml",
    ),
}


def get_template(
    name: str,
    encoder_template: str | None = None,
    lm_prompt: str | None = None,
) -> PromptTemplate:
    """A named template, optionally with its encoder/LM parts replaced (name='custom' needs both)."""
    if name == "custom":
        if encoder_template is None or lm_prompt is None:
            raise ValueError(
                "template 'custom' needs both encoder_template (containing {text}) and lm_prompt"
            )
        base = PromptTemplate(name="custom", encoder_template=encoder_template, lm_prompt=lm_prompt)
    elif name in TEMPLATES:
        base = TEMPLATES[name]
    else:
        raise ValueError(f"unknown template {name!r}; allowed: {', '.join([*TEMPLATES, 'custom'])}")
    if encoder_template is not None and "{text}" not in encoder_template:
        raise ValueError(f"encoder_template must contain '{{text}}', got {encoder_template!r}")
    return PromptTemplate(
        name=base.name,
        encoder_template=base.encoder_template if encoder_template is None else encoder_template,
        lm_prompt=base.lm_prompt if lm_prompt is None else lm_prompt,
        lm_prefix=base.lm_prefix,
        input_format=base.input_format,
        system_format=base.system_format,
        description=base.description,
    )
