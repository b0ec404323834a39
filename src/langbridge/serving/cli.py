"""`langbridge serve MODEL`: the OpenAI-compatible server and the side-by-side page (see docs/serving.md)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

SERVE_HINT = "`langbridge serve` needs the serve extra: pip install 'langbridge[serve]'."


def add_parsers(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible server (continuous batching) with a side-by-side LangBridge / LM-alone page",
    )
    serve.add_argument(
        "model",
        help="a LangBridge checkpoint (served with its LM alone), or with --lm-only a plain causal LM; "
        "aliases of the default pair work (e.g. smollm2-135m-instruct)",
    )
    serve.add_argument("--lm-only", action="store_true", help="serve only a plain causal LM")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("LANGBRIDGE_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 and /api routes (default: $LANGBRIDGE_API_KEY, else none)",
    )
    serve.add_argument("--max-batch", type=int, default=32, help="rows decoded together per model")
    serve.add_argument("--max-queue", type=int, default=256, help="waiting requests per model before 429")
    serve.add_argument("--name", help="model id clients use (default: the name of MODEL)")
    serve.add_argument("--device", default=None, help="cuda when available, else cpu")
    serve.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA), float32, bfloat16, float16")
    serve.set_defaults(func=_run_serve)


def language_identifier() -> Any:
    """The analysis module's identifier over every language it can tell apart, or None without lingua."""
    try:
        from ..analysis.languages import known_languages
        from ..analysis.output_language import OutputLanguageIdentifier

        return OutputLanguageIdentifier([info.code for info in known_languages() if info.lingua])
    except ImportError:
        return None


def build_app(args: argparse.Namespace) -> Any:
    from .app import create_app
    from .models import load_served_models

    if args.max_batch < 1 or args.max_queue < 1:
        raise ValueError("--max-batch and --max-queue must be >= 1.")
    if args.api_key is not None and not args.api_key.strip():
        raise ValueError("--api-key is empty.")
    models = load_served_models(
        args.model,
        lm_only=args.lm_only,
        device=args.device,
        dtype=args.dtype,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        name=args.name,
    )
    return create_app(models, api_key=args.api_key, identifier=language_identifier)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        app = build_app(args)
    except ImportError as err:
        print(f"langbridge serve: error: {SERVE_HINT} ({err})", file=sys.stderr)
        return 1
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(
            f"warning: serving on {args.host} without --api-key: anyone who can reach this port can use the model.",
            file=sys.stderr,
        )
    print(f"LangBridge server on http://{args.host}:{args.port}/ (OpenAI API under /v1)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
