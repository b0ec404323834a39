"""`langbridge analyze representations|output-language`: the paper's two analyses (Yoon et al. 2024, Sec. 6)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_LANGUAGES = "eng,swh,tel,spa,deu,ben,tha,zho"
PANEL_NAMES = {"langbridge": "LangBridge", "lm": "LM alone"}


def add_parsers(subparsers: Any) -> None:
    analyze = subparsers.add_parser(
        "analyze",
        help="analyses: language-agnosticism of representations, language of generated answers",
        description="The paper's analyses: are LangBridge's LM representations language-agnostic, and in which "
        "language does the model answer?",
    )
    sub = analyze.add_subparsers(dest="analysis", metavar="{representations,output-language}")
    sub.required = True

    rep = sub.add_parser(
        "representations",
        help="PCA / retrieval / silhouette of mean-pooled LM representations of parallel FLORES-200 sentences",
        description="Mean-pools the LM's last hidden states over the input positions (LangBridge: soft positions "
        "of the bridged encoder states + enc_eos; LM alone: the sentence's tokens) for parallel FLORES-200 devtest "
        "sentences, then reports cross-lingual retrieval accuracy, a language silhouette score and a PCA plot.",
    )
    rep.add_argument(
        "model", metavar="MODEL", help="LangBridge checkpoint directory (or a causal LM with --lm-only)"
    )
    rep.add_argument(
        "--lm-only", action="store_true", help="MODEL is a plain causal LM path/alias: analyze it alone"
    )
    rep.add_argument(
        "--languages", default=DEFAULT_LANGUAGES, help=f"comma-separated codes (default {DEFAULT_LANGUAGES})"
    )
    rep.add_argument(
        "--n", type=int, default=500, help="first N parallel sentences per language (default 500)"
    )
    rep.add_argument("--pivot", default="eng", help="retrieval pivot language (default eng)")
    rep.add_argument("--batch-size", type=int, default=16)
    rep.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="truncation in tokens of the encoder input (LangBridge) and of the LM-alone input (default 512)",
    )
    rep.add_argument(
        "--data-dir",
        default=None,
        help="folder with flores200/devtest/*.devtest (default: $LANGBRIDGE_DATA or ../shared/data)",
    )
    rep.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    rep.add_argument(
        "--output", default=None, help="output folder (default outputs/analysis/representations/<MODEL>)"
    )
    rep.add_argument(
        "--save-embeddings", action="store_true", help="also write the pooled vectors (embeddings.npz)"
    )
    rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rep.set_defaults(func=run_representations, interrupted=_interrupted)

    out = sub.add_parser(
        "output-language",
        help="language of every generated answer (accidental translation into English)",
        description="Identifies the language of each generated answer in predictions JSONL files of "
        "`langbridge eval` with lingua-language-detector and reports, per task and input language, the share "
        "answered in the input language, in English, in another language, or undetermined.",
    )
    out.add_argument(
        "predictions", nargs="+", metavar="PREDICTIONS", help="predictions .jsonl file(s) or folder(s)"
    )
    out.add_argument(
        "--output", default=None, help="output folder (default outputs/analysis/output-language/<name>)"
    )
    out.add_argument(
        "--extra-languages", default="", help="comma-separated codes added to the candidate languages"
    )
    out.add_argument(
        "--all-languages", action="store_true", help="candidates: all 75 lingua languages (slower)"
    )
    out.add_argument(
        "--min-letters",
        type=int,
        default=5,
        help="fewer letters (after stripping numbers/math/code) means undetermined (default 5)",
    )
    out.add_argument(
        "--examples", type=int, default=3, help="examples kept per category and language (default 3)"
    )
    out.add_argument("--max-example-chars", type=int, default=300)
    out.add_argument("--no-progress", action="store_true", help="hide progress bars")
    out.set_defaults(func=run_output_language, interrupted=_interrupted)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name).rstrip("/")).name) or "model"


def _interrupted(args: argparse.Namespace) -> str:
    return "an analysis has no partial results to keep; rerun the same command to redo it"


def _fail(err: BaseException) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------------------------
# representations


def _load_models(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig

    from langbridge.runtime import default_device, load
    from langbridge.utils import resolve_model_name

    device = torch.device(args.device or default_device())
    source = resolve_model_name(args.model)
    if not Path(source).is_dir():
        raise FileNotFoundError(
            f"MODEL {args.model!r} is not a directory or a known alias: pass a LangBridge checkpoint directory "
            "(or a causal LM directory/alias with --lm-only)."
        )
    config = AutoConfig.from_pretrained(source)
    if args.lm_only:
        if config.model_type == "langbridge":
            raise ValueError(
                f"{args.model} is a LangBridge checkpoint: drop --lm-only (its LM is analyzed too)."
            )
        lm = load(source, lm_only=True, device=device, dtype="float32")
        return {"lm": lm.model, "lm_tokenizer": lm.tokenizer, "device": device, "lm_source": source}
    if config.model_type != "langbridge":
        raise ValueError(
            f"{args.model} holds a {config.model_type!r} model, not a LangBridge checkpoint: pass --lm-only to "
            "analyze a plain causal LM, or a directory saved by LangBridgeModel.save_pretrained."
        )
    # The same truncation for both models (not the checkpoint's training-time max_encoder_length), within the
    # encoder's position table where it has one (BERT-family; T5 has relative positions).
    position_limit = getattr(config.encoder_config, "max_position_embeddings", None)
    max_encoder_length = min(args.max_length, position_limit) if position_limit else args.max_length
    runner = load(
        source, device=device, dtype="float32", processor_kwargs={"max_encoder_length": max_encoder_length}
    )
    return {
        "model": runner.model,
        "processor": runner.processor,  # type: ignore[attr-defined]
        "lm": runner.lm,
        "lm_tokenizer": runner.tokenizer,
        "device": device,
        "lm_source": runner.model.config.lm_name_or_path,
    }


def run_representations(args: argparse.Namespace) -> int:
    try:
        return _run_representations(args)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        return _fail(err)


def _run_representations(args: argparse.Namespace) -> int:
    from . import representations as R
    from .io import save_npz_atomic, write_json_atomic, write_text_atomic
    from .languages import resolve_language
    from .plots import plot_pca_panels

    if args.batch_size < 1 or args.max_length < 2:
        raise ValueError("--batch-size must be >= 1 and --max-length >= 2.")
    languages = [c.strip() for c in args.languages.split(",") if c.strip()]
    if len(languages) < 2:
        raise ValueError(f"--languages needs at least two languages, got {args.languages!r}.")
    pivot = resolve_language(args.pivot).code
    started = time.perf_counter()
    sentences = R.load_flores(languages, n=args.n, data_dir=args.data_dir)
    if pivot not in sentences:
        raise ValueError(f"--pivot {args.pivot} must be one of --languages ({', '.join(sentences)}).")
    parts = _load_models(args)
    results = R.analyze_representations(
        sentences,
        model=parts.get("model"),
        processor=parts.get("processor"),
        lm=parts["lm"],
        lm_tokenizer=parts["lm_tokenizer"],
        pivot=pivot,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=parts["device"],
        progress=not args.no_progress,
    )
    out_dir = Path(args.output or Path("outputs/analysis/representations") / _slug(args.model))
    codes = list(sentences)
    names = {c: resolve_language(c).name for c in codes}
    n = len(next(iter(sentences.values())))
    panels = []
    for key, res in results.items():
        m = res["metrics"]
        coords, labels = res["pca"]
        panels.append(
            {
                "title": f"{PANEL_NAMES[key]}\nsilhouette {m['silhouette']:.3f} · retrieval top-1 "
                f"{m['retrieval']['average']:.3f} (chance {1 / n:.3f})",
                "coords": coords,
                "labels": labels,
                "evr": m["pca_explained_variance"],
            }
        )
    plots = plot_pca_panels(
        panels,
        codes,
        out_dir / "pca",
        suptitle=f"Mean-pooled LM last hidden states, standardized, 2-D PCA (FLORES-200 devtest, {n} sentences "
        "per language)",
        language_names=names,
    )
    embeddings = None
    if args.save_embeddings:
        arrays = {
            f"{key}__{lang}": reps for key, res in results.items() for lang, reps in res["reps"].items()
        }
        embeddings = str(save_npz_atomic(out_dir / "embeddings.npz", **arrays))
    report = {
        "model": str(args.model),
        "lm": parts["lm_source"],
        "lm_only": bool(args.lm_only),
        "languages": codes,
        "flores_files": {c: resolve_language(c).flores for c in codes},
        "n": n,
        "pivot": pivot,
        "pooling": "Mean of the LM's last hidden state (after the final norm) over the input positions: for "
        "LangBridge the soft positions (bridged encoder states + enc_eos, LM prompt empty, BOS excluded); for the LM "
        "alone the sentence's tokens (BOS/EOS/padding excluded). Retrieval: cosine on raw pooled vectors; "
        "silhouette and PCA: standardized features.",
        "models": {key: res["metrics"] for key, res in results.items()},
        "runtime_s": time.perf_counter() - started,
        "device": str(parts["device"]),
        "plots": plots,
        "embeddings": embeddings,
    }
    write_json_atomic(out_dir / "representations.json", report)
    write_text_atomic(out_dir / "representations.md", R.representations_markdown(report))
    for key, res in results.items():
        m = res["metrics"]
        print(
            f"{PANEL_NAMES[key]:>10}: silhouette {m['silhouette']:.3f}, retrieval top-1 {m['retrieval']['average']:.3f}"
        )
    print(f"wrote {out_dir}/representations.{{json,md}}, pca.{{png,svg}} in {report['runtime_s']:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------------------------
# output-language


def run_output_language(args: argparse.Namespace) -> int:
    try:
        return _run_output_language(args)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        return _fail(err)


def _run_output_language(args: argparse.Namespace) -> int:
    from .io import write_json_atomic, write_jsonl_atomic, write_text_atomic
    from .output_language import (
        analyze_output_language,
        find_prediction_files,
        output_language_markdown,
        read_predictions,
    )
    from .plots import plot_output_language

    if args.examples < 0 or args.max_example_chars < 10:
        raise ValueError("--examples must be >= 0 and --max-example-chars >= 10.")
    files = find_prediction_files(args.predictions)
    records = read_predictions(files)
    extra = [c.strip() for c in args.extra_languages.split(",") if c.strip()]
    report, labels = analyze_output_language(
        records,
        extra_languages=extra,
        all_languages=args.all_languages,
        min_letters=args.min_letters,
        n_examples=args.examples,
        max_example_chars=args.max_example_chars,
        progress=not args.no_progress,
    )
    name = _slug(files[0].stem if len(files) == 1 else Path(args.predictions[0]).name)
    out_dir = Path(args.output or Path("outputs/analysis/output-language") / name)
    report["predictions"] = [str(f) for f in files]
    report["plots"] = plot_output_language(report, out_dir / "output_language")
    write_json_atomic(out_dir / "output_language.json", report)
    write_text_atomic(out_dir / "output_language.md", output_language_markdown(report, report["predictions"]))
    write_jsonl_atomic(out_dir / "answer_languages.jsonl", labels)
    for code, g in report["overall"].items():
        s = g["shares"]
        print(
            f"{code}: n={g['n']} input {100 * s['input_language']:.1f}% english {100 * s['english']:.1f}% "
            f"other {100 * s['other']:.1f}% undetermined {100 * s['undetermined']:.1f}%"
        )
    print(f"wrote {out_dir}/output_language.{{json,md,png,svg}} and answer_languages.jsonl")
    return 0
