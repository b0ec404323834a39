"""The runtime: one route from a checkpoint to outputs and scores.

`load(path_or_alias, lm_only=..., device=..., dtype=...)` gives a `ModelRunner` (`LangBridgeRunner` or
`CausalLMRunner`) that generation (`langbridge generate`, the server, the analyses) and evaluation use alike: it
lays out prompts, sorts and batches requests by tokens, decodes with continuous batching or `generate`, and scores
targets. Imports point down: the runtime uses the model core and the KV cache, never evaluation or experiments."""

from .decoding import GREEDY_NEUTRAL_SETTINGS, ModelRunner, longest_first, truncate_at_stop
from .loading import default_device, is_langbridge_checkpoint, load, resolve_dtype
from .models import CausalLMRunner, LangBridgeRunner
from .prompts import INSTRUCTION_TEMPLATES, adds_bos, chat_function, chat_prompt, instruction_template
from .requests import GenerationRequest, LoglikelihoodRequest, resolve_lm_prompt
from .scoring import target_logprobs

__all__ = [
    "GREEDY_NEUTRAL_SETTINGS",
    "INSTRUCTION_TEMPLATES",
    "CausalLMRunner",
    "GenerationRequest",
    "LangBridgeRunner",
    "LoglikelihoodRequest",
    "ModelRunner",
    "adds_bos",
    "chat_function",
    "chat_prompt",
    "default_device",
    "instruction_template",
    "is_langbridge_checkpoint",
    "load",
    "longest_first",
    "resolve_dtype",
    "resolve_lm_prompt",
    "target_logprobs",
    "truncate_at_stop",
]
