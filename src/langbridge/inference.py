"""Text generation from a LangBridge checkpoint or, for comparison, from the plain LM: `langbridge generate` and
`langbridge chat`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, TextStreamer

from langbridge.processing import LangBridgeProcessor
from langbridge.runtime import GREEDY_NEUTRAL_SETTINGS, ModelRunner, load
from langbridge.utils import atomic_write_text

__all__ = ["GREEDY_NEUTRAL_SETTINGS", "TextGenerator", "add_parsers"]


class TextGenerator:
    """`langbridge generate`'s view of a loaded model (`langbridge.runtime`): a LangBridge model with its processor,
    or a plain causal LM with its tokenizer (`processor is None`)."""

    def __init__(self, runner: ModelRunner):
        self.runner = runner

    @classmethod
    def load(
        cls, path: str, lm_only: bool = False, dtype: torch.dtype | str | None = None, device: str = "cpu"
    ) -> TextGenerator:
        """`path`: a LangBridge checkpoint, or (with `lm_only`) a plain LM or a LangBridge checkpoint whose base LM
        is then used alone. `dtype` None: as the weights were saved."""
        return cls(
            load(
                path,
                lm_only=lm_only,
                device=device,
                dtype="stored" if dtype is None else dtype,
                purpose="generate with",
            )
        )

    @property
    def model(self) -> Any:
        return self.runner.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.runner.tokenizer

    @property
    def processor(self) -> LangBridgeProcessor | None:
        return getattr(self.runner, "processor", None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def lm(self) -> Any:
        return self.runner.lm

    def inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        runner = self.runner
        return runner._inputs([runner.text_request(t) for t in texts])

    def generate(
        self, texts: list[str], batch_size: int = 8, continuous_batching: bool = True, **generate_kwargs: Any
    ) -> list[str]:
        """Batched generation, longest inputs (in tokens) first; output in input order (`ModelRunner.generate_texts`)."""
        return self.runner.generate_texts(
            texts, batch_size=batch_size, continuous_batching=continuous_batching, **generate_kwargs
        )

    def _greedy_settings(self, kwargs: dict[str, Any]) -> tuple[int, list[str]] | None:
        return self.runner.greedy_settings(kwargs)

    def stream(self, text: str, **generate_kwargs: Any) -> None:
        streamer = TextStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            self.model.generate(
                **self.inputs([text]), streamer=streamer, tokenizer=self.tokenizer, **generate_kwargs
            )


def _check_generation_args(args: argparse.Namespace) -> None:
    """One-line errors for settings that generate would reject with a traceback, or silently ignore."""
    if args.num_beams < 1:
        raise ValueError(f"--num-beams {args.num_beams}: must be >= 1 (1 = no beam search)")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    if getattr(args, "batch_size", 1) < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be >= 1")
    if not args.do_sample:
        given = [
            flag
            for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p))
            if value is not None
        ]
        if given:
            raise ValueError(
                f"{' and '.join(given)} only apply to sampling; add --do-sample, or drop them for greedy"
            )
        return
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature > 0):
        raise ValueError(f"--temperature {args.temperature}: must be a number > 0 (lower = less random)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p}: must be in (0, 1] (1 = no nucleus filtering)")


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    _check_generation_args(args)
    kwargs: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.do_sample:
        temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
        kwargs.update(
            do_sample=True, temperature=temperature, top_p=DEFAULT_TOP_P if args.top_p is None else args.top_p
        )
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if args.stop:
        kwargs["stop_strings"] = args.stop
    return kwargs


DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.7, 0.95


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="LangBridge checkpoint directory, or a plain LM with --lm-only")
    parser.add_argument("--lm-only", action="store_true", help="generate with the LM alone (baseline)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--do-sample", action="store_true")
    parser.add_argument("--temperature", type=float, help=f"with --do-sample (default {DEFAULT_TEMPERATURE})")
    parser.add_argument("--top-p", type=float, help=f"with --do-sample, in (0, 1] (default {DEFAULT_TOP_P})")
    parser.add_argument("--stop", action="append", help="stop string (repeatable)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)


def add_parsers(subparsers: Any) -> None:
    gen = subparsers.add_parser(
        "generate", help="generate answers for texts given on the command line or in a file"
    )
    _add_common(gen)
    gen.add_argument("texts", nargs="*", help="input texts (any language)")
    gen.add_argument("--file", help="one input per line (.txt) or JSONL with a 'text' field")
    gen.add_argument("--output", help="write JSONL {text, output} here instead of printing")
    gen.add_argument("--batch-size", type=int, default=8)
    gen.set_defaults(func=_run_generate)
    chat = subparsers.add_parser("chat", help="interactive single-turn chat with streamed tokens")
    _add_common(chat)
    chat.set_defaults(func=_run_chat)


def _read_inputs(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if args.file:
        path = Path(args.file)
        if not path.exists():
            raise FileNotFoundError(f"--file {path} does not exist.")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    texts.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(
                        f"{path}:{n}: expected a JSON object with a 'text' field ({err})."
                    ) from err
            else:
                texts.append(line)
    if not texts:
        raise ValueError("No input: pass texts as arguments or --file FILE.")
    return texts


def _run_generate(args: argparse.Namespace) -> int:
    _check_generation_args(args)  # before the model is loaded
    texts = _read_inputs(args)
    torch.manual_seed(args.seed)
    generator = TextGenerator.load(args.checkpoint, lm_only=args.lm_only, device=args.device)
    outputs = generator.generate(texts, batch_size=args.batch_size, **_generation_kwargs(args))
    rows = [{"text": t, "output": o} for t, o in zip(texts, outputs, strict=True)]
    if args.output:
        atomic_write_text(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"Wrote {len(rows)} generations to {args.output}", file=sys.stderr)
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _run_chat(args: argparse.Namespace) -> int:
    _check_generation_args(args)
    torch.manual_seed(args.seed)
    generator = TextGenerator.load(args.checkpoint, lm_only=args.lm_only, device=args.device)
    kind = "LM alone" if generator.processor is None else "LangBridge"
    print(f"{kind} chat ({args.checkpoint}). Each message is answered on its own. Ctrl-D or 'exit' quits.")
    while True:
        try:
            text = input(">>> ")
        except EOFError:
            print()
            return 0
        if text.strip() in {"exit", "quit"}:
            return 0
        if not text.strip():
            continue
        generator.stream(text, **_generation_kwargs(args))
