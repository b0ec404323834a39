"""GGUF causal LMs (SmolLM2, gemma-3): transformers dequantizes them (`gguf_file=...`); the weights are re-saved
as a plain float32 safetensors model. Files shipped in parts are joined and checked first. `pretrained` locates
the files and caches the result."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_source(paths: list[Path], sha256: dict[str, str], reinstall: str, work_dir: Path) -> Path:
    """The GGUF file: in place if shipped whole, else joined (in order) from its parts and checked against
    `sha256` (file name -> digest); `reinstall` is the command named when the check fails."""
    if len(paths) == 1:
        return paths[0]
    name = next(iter(sha256), paths[0].name.rsplit(".part", 1)[0])
    joined = work_dir / name
    with joined.open("wb") as out:
        for part in paths:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    expected = sha256.get(name)
    if expected and sha256_file(joined) != expected:
        raise ValueError(
            f"Joined {name} from {len(paths)} parts has the wrong sha256 (expected {expected}); "
            f"reinstall the parts: {reinstall}"
        )
    return joined


def convert_gguf(
    name: str, paths: list[Path], sha256: dict[str, str], reinstall: str, out_dir: Path
) -> dict[str, Any]:
    """A float32 Hugging Face causal-LM directory in `out_dir` from a GGUF file (or its parts)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{name}.gguf.") as work:
        gguf_path = gguf_source(paths, sha256, reinstall, Path(work))
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
