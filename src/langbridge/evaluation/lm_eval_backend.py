"""lm-evaluation-harness backend: run any harness task on a LangBridge checkpoint.

    python -m langbridge.evaluation.lm_eval_backend --model langbridge --model_args pretrained=CKPT --tasks xcopa_sw
    langbridge lm-eval --model langbridge --model_args pretrained=CKPT --tasks xcopa_sw      (same thing)

lm-eval (0.4.x) finds models only in its own registry; it has no plugin discovery, so the plain `lm_eval` command
knows `langbridge` only after this module has been imported. Both commands above import it and then hand the
arguments to lm-eval's own CLI; from Python, `import langbridge.evaluation.lm_eval_backend` before
`lm_eval.simple_evaluate(model="langbridge", model_args="pretrained=CKPT", ...)`, or pass
`model=LangBridgeLM(pretrained=CKPT)`.

How harness requests map onto LangBridge (as in the paper's evaluation, the encoder reads the prompt):
- generate_until(context, gen_kwargs): the encoder reads the context; the LM writes after the checkpoint's
  lm_prompt, until a stop string (`until`), EOS or `max_gen_toks`.
- loglikelihood(context, continuation): the encoder reads the context; the LM scores the continuation (leading
  whitespace dropped) right after the lm_prompt. Returns (sum of log-probs, is-greedy).
- loglikelihood_rolling(text): the text is cut into windows of LM tokens; for each window the encoder reads all
  text before it (its end, up to max_encoder_length) and the LM scores the window. Windows sum to the total.
An empty context has the encoder read only its end-of-sequence token, the counterpart of the harness conditioning
a plain LM on its EOT token.

Requires the optional dependency: `pip install 'langbridge[lm-eval]'`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

try:
    import lm_eval.models  # noqa: F401  (fills the registry first: get_model() only does that when it is empty)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import model_registry, register_model
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "langbridge.evaluation.lm_eval_backend needs lm-evaluation-harness: pip install 'langbridge[lm-eval]' "
        "(or pip install lm-eval)."
    ) from err

from tqdm.auto import tqdm

from .backends import LangBridgeBackend, load_backend
from .requests import GenerationRequest, LoglikelihoodRequest

__all__ = ["LangBridgeLM", "main"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256
# Sampling settings generate_until understands; anything else in gen_kwargs is reported and ignored.
_KNOWN_GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p"}


def _batch_size(value: Any, max_batch_size: Any) -> int:
    """lm-eval passes --batch_size as text: an integer, or 'auto' / 'auto:N' (no auto-tuning here)."""
    if value is None:
        return 8
    text = str(value).strip().lower()
    if text.startswith("auto"):
        size = int(max_batch_size) if max_batch_size else 8
        logger.warning("batch_size=%s: LangBridgeLM does not auto-tune; using %d.", value, size)
        return size
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"batch_size must be an integer or 'auto', got {value!r}.") from None
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}.")
    return size


class LangBridgeLM(LM):
    """lm-eval `LM` over a LangBridge checkpoint.

    model_args: pretrained (checkpoint directory or hub id, required), batch_size, device, dtype
    (auto/float32/bfloat16/float16), max_gen_toks (default generation budget, 256).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        batch_size: int | str | None = 8,
        max_batch_size: int | str | None = None,
        device: str | None = None,
        dtype: str | None = "auto",
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        backend: LangBridgeBackend | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            logger.warning("LangBridgeLM ignores model_args %s.", sorted(unused))
        size = _batch_size(batch_size, max_batch_size)
        if backend is None:
            if not pretrained:
                raise ValueError(
                    "LangBridgeLM needs the checkpoint: --model_args pretrained=/path/to/langbridge-checkpoint"
                )
            try:
                loaded = load_backend(pretrained, batch_size=size, device=device, dtype=dtype)
            except ValueError as err:
                raise ValueError(
                    f"{err} With lm-eval, evaluate a plain LM with `--model hf --model_args pretrained=...`."
                ) from err
            assert isinstance(loaded, LangBridgeBackend)  # load_backend rejects plain LMs without lm_only
            backend = loaded
        self.backend = backend
        self.batch_size = size
        self.backend.batch_size = size
        self._device = self.backend.device
        self.max_gen_toks = int(max_gen_toks)

    @classmethod
    def from_backend(
        cls, backend: LangBridgeBackend, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS
    ) -> LangBridgeLM:
        """Wrap an already loaded model (e.g. `LangBridgeBackend(model, processor)`)."""
        return cls(backend=backend, batch_size=backend.batch_size, max_gen_toks=max_gen_toks)

    # ------------------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        lls = [LoglikelihoodRequest(context=r.args[0], continuation=r.args[1]) for r in requests]
        # Requests with one context form a group (one encoder pass); the runtime sorts and batches the groups.
        by_context: dict[str, list[int]] = {}
        for i, r in enumerate(lls):
            by_context.setdefault(r.context, []).append(i)
        groups = list(by_context.values())
        results: list[tuple[float, bool] | None] = [None] * len(lls)
        with tqdm(
            total=len(lls),
            desc="langbridge loglikelihood",
            disable=disable_tqdm or self.rank != 0,
            unit="req",
        ) as bar:
            for g, details in self.backend.loglikelihood_stream([[lls[i] for i in idxs] for idxs in groups]):
                for i, (lp, greedy, _) in zip(groups[g], details, strict=True):
                    results[i] = (lp, greedy)
                    self.cache_hook.add_partial("loglikelihood", requests[i].args, (lp, greedy))
                bar.update(len(groups[g]))
        return results  # type: ignore[return-value]

    def _windows(self, text: str) -> list[tuple[str, str]]:
        """(context, window) pairs covering `text`, cut at LM token boundaries."""
        proc = self.backend.processor
        tok = proc.lm_tokenizer
        fixed = len(tok(proc.lm_prefix + proc.lm_prompt, add_special_tokens=False)["input_ids"])
        # Re-tokenizing a window on its own can add a token or two at its edges: keep a margin.
        size = max(1, int(0.9 * (proc.max_lm_length - fixed)) - 2)
        if not getattr(tok, "is_fast", False):
            raise ValueError(
                "loglikelihood_rolling cuts texts at token boundaries and needs a fast (Rust) LM tokenizer; "
                f"{type(tok).__name__} is not one."
            )
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if not offsets:
            return []
        starts = [offsets[i][0] for i in range(0, len(offsets), size)]
        bounds = [*starts[1:], len(text)]
        pairs = []
        for start, end in zip(starts, bounds, strict=True):
            start = 0 if start == starts[0] else start
            window = text[start:end]
            if window.strip():
                pairs.append((text[:start], window))
        return pairs

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        totals = []
        for req in tqdm(requests, desc="langbridge rolling", disable=disable_tqdm or self.rank != 0):
            (text,) = req.args[:1]
            windows = [LoglikelihoodRequest(ctx, win) for ctx, win in self._windows(text)]
            total = sum(lp for lp, _ in self.backend.loglikelihood_with_greedy(windows)) if windows else 0.0
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    def _generation_request(self, context: str, gen_kwargs: dict[str, Any] | None) -> GenerationRequest:
        kwargs = dict(gen_kwargs or {})
        unknown = set(kwargs) - _KNOWN_GEN_KWARGS
        if unknown:
            logger.warning("LangBridgeLM ignores generation arguments %s.", sorted(unknown))
        until = kwargs.get("until") or ()
        if isinstance(until, str):
            until = (until,)
        if not isinstance(until, list | tuple) or not all(isinstance(s, str) for s in until):
            raise ValueError(f"gen_kwargs['until'] must be a string or a list of strings, got {until!r}.")
        temperature = float(kwargs.get("temperature", 0.0) or 0.0)
        # Harness tasks ask for greedy decoding with do_sample=False and/or temperature=0.
        do_sample = bool(kwargs.get("do_sample", temperature > 0.0)) and temperature > 0.0
        return GenerationRequest(
            encoder_text=context,
            full_prompt=context,
            stop=tuple(until),
            max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=float(kwargs.get("top_p", 1.0) or 1.0) if do_sample else 1.0,
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        gens = [self._generation_request(r.args[0], r.args[1] if len(r.args) > 1 else None) for r in requests]
        outputs: list[str | None] = [None] * len(gens)
        # The whole queue at once: the backend sorts it and keeps its batch full (continuous batching).
        bar = tqdm(
            total=len(gens),
            desc="langbridge generate_until",
            disable=disable_tqdm or self.rank != 0,
            unit="req",
        )
        with bar:
            for i, text in self.backend.generate_stream(gens):
                outputs[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(1)
        return outputs  # type: ignore[return-value]

    # Chat templates: a LangBridge checkpoint puts its LM prompt (the assistant-turn opener) after the soft tokens
    # itself, and the encoder reads plain text, so the harness must not wrap prompts in the LM's chat template.
    @property
    def tokenizer_name(self) -> str:
        return self._no_chat_template()

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self._no_chat_template()

    @staticmethod
    def _no_chat_template() -> str:
        raise ValueError(
            "LangBridgeLM does not use --apply_chat_template: the checkpoint's processor already adds the LM's "
            "prompt after the soft tokens (its lm_prompt) and the encoder reads plain text. Drop the flag."
        )


def _register() -> None:
    try:
        register_model("langbridge")(LangBridgeLM)
    except ValueError:
        # Already registered by an earlier import of this module (e.g. after importlib.reload).
        current = model_registry.get("langbridge")
        if getattr(current, "__qualname__", None) != LangBridgeLM.__qualname__:
            raise


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run lm-eval's command line with the `langbridge` model registered."""
    from lm_eval.__main__ import cli_evaluate

    # lm-eval's CLI reads sys.argv itself (it inserts its `run` subcommand there).
    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
