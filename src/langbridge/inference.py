"""Text generation from a LangBridge checkpoint or, for comparison, from the plain LM: `langbridge generate` and
`langbridge chat`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, TextStreamer

from langbridge.continuous_batching import (
    continuous_greedy,
    eos_token_ids,
    prefill_batch,
    stop_string_checker,
    supports_continuous_batching,
)
from langbridge.modeling import LangBridgeModel
from langbridge.processing import LangBridgeProcessor, load_lm_tokenizer
from langbridge.utils import atomic_write_text, check_model_source, model_load_error, resolve_model_name

# Generation settings that leave greedy decoding as a plain argmax until EOS, a stop string or the token budget.
GREEDY_NEUTRAL_SETTINGS = {
    "max_new_tokens",
    "max_length",  # max_new_tokens takes precedence; it is required for the continuous path
    "num_beams",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "stop_strings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}


@dataclass
class TextGenerator:
    """A LangBridge model with its processor, or a plain causal LM with its tokenizer (`processor is None`)."""

    model: Any
    tokenizer: PreTrainedTokenizerBase
    processor: LangBridgeProcessor | None = None

    @classmethod
    def load(
        cls, path: str, lm_only: bool = False, dtype: torch.dtype | None = None, device: str = "cpu"
    ) -> TextGenerator:
        """`path`: a LangBridge checkpoint, or (with `lm_only`) a plain LM or a LangBridge checkpoint whose base LM
        is then used alone."""
        check_model_source(path)  # a missing path or an offline hub id: say so before transformers guesses
        source = resolve_model_name(path)
        is_langbridge = (Path(source) / "config.json").exists() and (
            json.loads((Path(source) / "config.json").read_text()).get("model_type") == "langbridge"
        )
        if is_langbridge:
            model = LangBridgeModel.from_pretrained(source, dtype=dtype).to(device).eval()
            processor = LangBridgeProcessor.from_pretrained(source)
            if lm_only:
                return cls(model.lm, processor.lm_tokenizer)
            return cls(model, processor.lm_tokenizer, processor)
        if not lm_only:
            raise ValueError(
                f"{path} is not a LangBridge checkpoint (no config.json with model_type 'langbridge'). "
                "Pass --lm-only to generate with a plain causal LM."
            )
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as err:
            if Path(source).is_dir():
                raise
            raise FileNotFoundError(model_load_error(path, err)) from err
        return cls(model, load_lm_tokenizer(tokenizer))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if self.processor is not None:
            batch = self.processor(texts)
        else:
            prompts = [self.lm_prompt(t) for t in texts]
            self.tokenizer.padding_side = "left"
            batch = self.tokenizer(
                prompts, return_tensors="pt", padding=True, add_special_tokens=not self._chat
            )
        return {k: v.to(self.device) for k, v in batch.items()}

    @property
    def _chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def lm_prompt(self, text: str) -> str:
        """The LM-alone baseline reads the question as text, in its chat template when it has one."""
        if not text.strip():
            raise ValueError("Input text is empty or whitespace-only; pass real text.")
        if self._chat:
            messages = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text

    @property
    def lm(self) -> Any:
        return self.model if self.processor is None else self.model.lm

    def generate(
        self, texts: list[str], batch_size: int = 8, continuous_batching: bool = True, **generate_kwargs: Any
    ) -> list[str]:
        """Batched generation, longest inputs first; output in input order. Plain greedy decoding runs with
        continuous batching (finished answers leave the batch, the next inputs join it); any other decoding
        (beams, sampling, a checkpoint's own generation settings) runs `generate` a batch at a time."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        outputs: list[str] = [""] * len(texts)
        greedy = self._greedy_settings(generate_kwargs) if continuous_batching else None
        if greedy is not None:
            max_new_tokens, stops = greedy

            answers = continuous_greedy(
                self.model,
                lambda idx: prefill_batch(self.model, self.inputs([texts[order[j]] for j in idx])),
                [max_new_tokens] * len(texts),
                batch_size,
                eos_token_ids(self.lm, self.tokenizer),
                stop_string_checker(self.tokenizer, [stops] * len(texts)),
            )
            with torch.inference_mode():
                for j, ids in answers:
                    outputs[order[j]] = self.tokenizer.decode(ids, skip_special_tokens=True)
            return outputs
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.inputs([texts[i] for i in chunk])
            with torch.inference_mode():
                sequences = self.model.generate(**batch, tokenizer=self.tokenizer, **generate_kwargs)
            new = sequences[:, batch["input_ids"].shape[1] :]
            for i, text in zip(
                chunk, self.tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
            ):
                outputs[i] = text
        return outputs

    def _greedy_settings(self, kwargs: dict[str, Any]) -> tuple[int, list[str]] | None:
        """(max_new_tokens, stop strings) when this call is plain greedy decoding, which continuous batching
        reproduces; None when `generate` must run it (beams, sampling, penalties or other logits processing in
        the call or the checkpoint's generation config, or an LM whose cache cannot be joined)."""
        config = self.model.generation_config.to_diff_dict() if self.model.generation_config else {}
        settings = {**config, **{k: v for k, v in kwargs.items() if v is not None}}
        if (
            set(settings) - GREEDY_NEUTRAL_SETTINGS
            or settings.get("num_beams", 1) != 1
            or settings.get("do_sample", False)
            or not settings.get("max_new_tokens")
            or not supports_continuous_batching(self.lm)
        ):
            return None
        return int(settings["max_new_tokens"]), list(settings.get("stop_strings") or [])

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
