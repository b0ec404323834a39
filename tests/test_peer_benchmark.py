"""The peer benchmark's model-copy writer (benchmarks/peer/legacy.py): folders transformers 4.37 reads the way
transformers 5 meant them, and the official-format checkpoint. Tiny random models, no network.

The checks that need transformers 4.37 run in the official environment made by
benchmarks/peer/setup_official_env.sh; point LANGBRIDGE_PEER_PYTHON at its python to run them (they skip
otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import CORPUS, train_byte_bpe
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peer.legacy import (  # noqa: E402
    legacy_model_config,
    legacy_tokenizer_config,
    legacy_tokenizer_json,
    official_state_dict,
    write_legacy_copy,
    write_official_checkpoint,
)

PEER_PYTHON = os.environ.get("LANGBRIDGE_PEER_PYTHON")
needs_peer_env = pytest.mark.skipif(
    not PEER_PYTHON or not Path(PEER_PYTHON).is_file(),
    reason="transformers 4.37 check: set LANGBRIDGE_PEER_PYTHON to the python of the env that "
    "benchmarks/peer/setup_official_env.sh creates",
)


def test_rope_parameters_become_rope_theta():
    config = {
        "model_type": "llama",
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
        "dtype": "float32",
        "hidden_size": 8,
    }
    out = legacy_model_config(config)
    assert out["rope_theta"] == 100000.0 and out["rope_scaling"] is None
    assert "rope_parameters" not in out and out["torch_dtype"] == "float32" and "dtype" not in out
    assert config["rope_parameters"]["rope_theta"] == 100000.0  # the input is left as it was
    linear = legacy_model_config(
        {"rope_parameters": {"rope_theta": 5e5, "rope_type": "linear", "factor": 4.0}}
    )
    assert linear["rope_theta"] == 5e5 and linear["rope_scaling"] == {"type": "linear", "factor": 4.0}
    with pytest.raises(ValueError, match="no transformers 4.37 equivalent"):
        legacy_model_config({"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}})


def test_tokenizer_json_merges_and_metaspace():
    data = {
        "model": {"type": "BPE", "merges": [["Ġ", "t"], ["i", "n"], "a b"], "vocab": {}},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "WhitespaceSplit"},
                {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
            ],
        },
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": False},
        "normalizer": None,
        "post_processor": None,
    }
    out = legacy_tokenizer_json(data)
    assert out["model"]["merges"] == ["Ġ t", "i n", "a b"]
    meta = out["pre_tokenizer"]["pretokenizers"][1]
    assert "split" not in meta and meta["add_prefix_space"] is True and meta["prepend_scheme"] == "always"
    assert out["decoder"]["add_prefix_space"] is False and "split" not in out["decoder"]
    assert data["model"]["merges"][0] == ["Ġ", "t"]  # not modified in place
    with pytest.raises(ValueError, match="contains a space"):
        legacy_tokenizer_json({"model": {"type": "BPE", "merges": [["a b", "c"]]}})


def test_tokenizer_config_class_and_chat_template():
    out = legacy_tokenizer_config(
        {"tokenizer_class": "TokenizersBackend", "backend": "tokenizers"}, "{{ x }}"
    )
    assert out == {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": "{{ x }}"}
    assert legacy_tokenizer_config({"tokenizer_class": "XLMRobertaTokenizer"})["tokenizer_class"] == (
        "XLMRobertaTokenizer"
    )


def _metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny XLM-R-like tokenizer: Unigram with a Metaspace pre-tokenizer and decoder."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def _tiny_llama(tmp_path: Path) -> tuple[Path, LlamaForCausalLM]:
    bpe = train_byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
        initializer_range=0.2,  # peaked attention, so that positions (rope) visibly matter
    )
    lm = LlamaForCausalLM(config).eval()
    src = tmp_path / "lm5"
    lm.save_pretrained(src)
    tok.save_pretrained(src)
    return src, lm


def test_written_copy_round_trips(tmp_path):
    src, _ = _tiny_llama(tmp_path)
    written = json.loads((src / "config.json").read_text())
    assert "rope_parameters" in written and "rope_theta" not in written  # what transformers 5 writes
    dst = write_legacy_copy(src, tmp_path / "lm437", weights=True)
    config = json.loads((dst / "config.json").read_text())
    assert config["rope_theta"] == 100000.0 and "rope_parameters" not in config
    tok_json = json.loads((dst / "tokenizer.json").read_text())
    assert all(isinstance(m, str) and len(m.split(" ")) == 2 for m in tok_json["model"]["merges"])
    assert (
        json.loads((dst / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    assert (dst / "model.safetensors").exists()
    # The copy still means the same to this transformers: same token ids for every text.
    before, after = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(dst)
    for text in CORPUS:
        assert before(text)["input_ids"] == after(text)["input_ids"]

    meta_dir = tmp_path / "enc5"
    _metaspace_tokenizer().save_pretrained(meta_dir)
    (meta_dir / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    meta_dst = write_legacy_copy(meta_dir, tmp_path / "enc437")
    assert '"split"' not in (meta_dst / "tokenizer.json").read_text()
    before, after = AutoTokenizer.from_pretrained(meta_dir), AutoTokenizer.from_pretrained(meta_dst)
    for text in CORPUS:
        assert before(text)["input_ids"] == after(text)["input_ids"]


def test_official_checkpoint_maps_back_to_ours(tmp_path, tiny_langbridge):
    from safetensors.torch import load_file

    from langbridge.convert_official import map_official_keys

    model, _ = tiny_langbridge()
    ckpt = write_official_checkpoint(model, tmp_path / "official", tmp_path / "enc", tmp_path / "lm")
    config = json.loads((ckpt / "config.json").read_text())
    assert config["alignments"] == "linear" and config["dim_lm"] == model.config.lm_hidden_size
    state = load_file(ckpt / "model.safetensors")
    assert {k.split(".")[1] for k in state} == {"enc", "alignment", "lm", "lm_head", "embeddings"}
    back = map_official_keys(state, model)
    ours = model.state_dict()
    assert set(back) <= set(ours)
    for key, tensor in back.items():
        assert torch.equal(tensor, ours[key].float()), key
    with pytest.raises(ValueError, match="Unexpected key"):
        official_state_dict({"something.else": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------------------------
# With transformers 4.37 (the official environment)
CHECK_437 = textwrap.dedent(
    """
    import json, sys, torch, transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert transformers.__version__ == "4.37.2", transformers.__version__
    lm_dir, enc_dir, texts, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    tok = AutoTokenizer.from_pretrained(lm_dir)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, torch_dtype=torch.float32).eval()
    enc_tok = AutoTokenizer.from_pretrained(enc_dir)
    ids = [tok(t)["input_ids"] for t in texts]
    with torch.no_grad():
        logits = [lm(input_ids=torch.tensor([i])).logits[0].tolist() for i in ids]
    json.dump({"ids": ids, "enc_ids": [enc_tok(t)["input_ids"] for t in texts], "logits": logits,
               "rope_theta": lm.config.rope_theta}, open(out, "w"))
    """
)


@needs_peer_env
def test_transformers_437_reads_the_copy_as_we_do(tmp_path):
    src, lm = _tiny_llama(tmp_path)
    dst = write_legacy_copy(src, tmp_path / "lm437", weights=True)
    enc5 = tmp_path / "enc5"
    _metaspace_tokenizer().save_pretrained(enc5)
    (enc5 / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    enc_dst = write_legacy_copy(enc5, tmp_path / "enc437")
    # The same folder without rope_theta: what 4.37 does with transformers 5's config as written.
    raw = tmp_path / "lm_raw"
    write_legacy_copy(src, raw, weights=True)
    raw_config = json.loads((raw / "config.json").read_text())
    raw_config.pop("rope_theta")
    (raw / "config.json").write_text(json.dumps(raw_config))
    texts = CORPUS[:4]
    results = {}
    for name, folder in (("copy", dst), ("raw", raw)):
        out = tmp_path / f"{name}.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        proc = subprocess.run(
            [PEER_PYTHON, "-c", CHECK_437, str(folder), str(enc_dst), json.dumps(texts), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[name] = json.loads(out.read_text())
    ours_tok = AutoTokenizer.from_pretrained(src)
    enc_tok = AutoTokenizer.from_pretrained(enc5)
    assert results["copy"]["rope_theta"] == 100000.0 and results["raw"]["rope_theta"] == 10000.0
    for i, text in enumerate(texts):
        ids = ours_tok(text)["input_ids"]
        assert results["copy"]["ids"][i] == ids
        assert results["copy"]["enc_ids"][i] == enc_tok(text)["input_ids"]
        with torch.no_grad():
            ours = lm(input_ids=torch.tensor([ids])).logits[0]
        assert (torch.tensor(results["copy"]["logits"][i]) - ours).abs().max() < 1e-4
        if len(ids) > 2:  # rope only shows from the second position on
            assert (torch.tensor(results["raw"]["logits"][i]) - ours).abs().max() > 1e-2


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
