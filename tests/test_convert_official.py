"""Conversion of checkpoints written by the official LangBridge code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from langbridge import LangBridgeModel, LangBridgeProcessor
from langbridge.convert_official import convert_official


def write_official_checkpoint(path, encoder_dir, lm_dir, alignments="linear", pickle=False):
    """A checkpoint in the official layout: lb.enc.*, lb.alignment.*, lb.lm.*, lb.lm_head.*, lb.embeddings.*"""
    torch.manual_seed(3)
    encoder = AutoModel.from_pretrained(
        encoder_dir
    )  # the official code loads BERT-family encoders with AutoModel
    lm = AutoModelForCausalLM.from_pretrained(lm_dir)
    d_enc, d_lm = encoder.config.hidden_size, lm.config.hidden_size
    state = {f"lb.enc.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"lb.lm.{k}": v for k, v in lm.model.state_dict().items()})
    state["lb.lm_head.weight"] = lm.lm_head.weight.detach().clone()
    state["lb.embeddings.weight"] = lm.model.embed_tokens.weight.detach().clone()
    if alignments == "linear":
        state["lb.alignment.linear.weight"] = torch.randn(d_lm, d_enc) * 0.05
        state["lb.alignment.linear.bias"] = torch.randn(d_lm) * 0.05
    else:
        state["lb.alignment.ffn.0.weight"] = torch.randn(2 * d_enc, d_enc) * 0.05
        state["lb.alignment.ffn.0.bias"] = torch.randn(2 * d_enc) * 0.05
        state["lb.alignment.ffn.2.weight"] = torch.randn(d_lm, 2 * d_enc) * 0.05
        state["lb.alignment.ffn.2.bias"] = torch.randn(d_lm) * 0.05
    state["lb.alignment.enc_eos"] = torch.randn(d_lm)
    path.mkdir(parents=True)
    config = {
        "enc": "some-org/encoder-on-the-hub",
        "lm": "some-org/lm-on-the-hub",
        "alignments": alignments,
        "dim_enc": d_enc,
        "dim_lm": d_lm,
        "freeze_language_model": True,
        "freeze_encoder": True,
        "architectures": ["LangBridgeModel"],
    }
    (path / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in state.items()}
    if pickle:
        torch.save(state, path / "pytorch_model.bin")
    else:
        save_file(state, path / "model.safetensors")
    return state, encoder, lm


def official_logits(state, encoder, lm, enc_ids, lm_ids, alignments="linear"):
    """The official assembly for one unpadded example: BOS, projected states, enc_eos, LM tokens after BOS."""
    with torch.no_grad():
        hidden = encoder(input_ids=enc_ids).last_hidden_state
        if alignments == "linear":
            projected = hidden @ state["lb.alignment.linear.weight"].T + state["lb.alignment.linear.bias"]
        else:
            inner = torch.nn.functional.gelu(
                hidden @ state["lb.alignment.ffn.0.weight"].T + state["lb.alignment.ffn.0.bias"]
            )
            projected = inner @ state["lb.alignment.ffn.2.weight"].T + state["lb.alignment.ffn.2.bias"]
        emb = lm.get_input_embeddings()(lm_ids)
        seq = torch.cat(
            [emb[:, :1], projected, state["lb.alignment.enc_eos"].view(1, 1, -1), emb[:, 1:]], dim=1
        )
        return lm(inputs_embeds=seq).logits


@pytest.mark.parametrize("alignments", ["linear", "ffn"])
def test_converted_weights_and_logits_match_official(tmp_path, tiny_dirs, alignments):
    state, encoder, lm = write_official_checkpoint(
        tmp_path / "official", tiny_dirs["bert"], tiny_dirs["llama"], alignments
    )
    out = convert_official(
        tmp_path / "official", tmp_path / "ours", encoder=tiny_dirs["bert"], lm=tiny_dirs["llama"]
    )
    model = LangBridgeModel.from_pretrained(out).eval()
    ours = model.state_dict()
    prefix = "linear" if alignments == "linear" else "ffn"
    for key, value in state.items():
        if key.startswith("lb.alignment."):
            assert torch.equal(ours["bridge." + key[len("lb.alignment.") :]], value), key
    assert any(k.startswith(f"bridge.{prefix}") for k in ours)
    assert torch.equal(ours["lm.lm_head.weight"], state["lb.lm_head.weight"])
    assert torch.equal(
        ours["lm.model.layers.0.self_attn.q_proj.weight"], state["lb.lm.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        ours["encoder.encoder.layer.1.output.dense.weight"],
        state["lb.enc.encoder.layer.1.output.dense.weight"],
    )

    processor = LangBridgeProcessor.from_pretrained(out)
    text, continuation = "Swali: Janet ana mayai 16.", " The answer is"
    batch = processor([text], lm_prompts=[continuation], padding_side="right")
    with torch.no_grad():
        got = model(**batch).logits
    enc_ids = AutoTokenizer.from_pretrained(tiny_dirs["bert"])(text, return_tensors="pt")["input_ids"]
    lm_ids = AutoTokenizer.from_pretrained(tiny_dirs["llama"])(continuation, return_tensors="pt")["input_ids"]
    expected = official_logits(state, encoder, lm, enc_ids, lm_ids, alignments)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_conversion_errors_are_clear(tmp_path, tiny_dirs):
    with pytest.raises(FileNotFoundError, match="official LangBridge checkpoint"):
        convert_official(tmp_path / "nothing", tmp_path / "out")
    write_official_checkpoint(tmp_path / "pkl", tiny_dirs["bert"], tiny_dirs["llama"], pickle=True)
    with pytest.raises(ValueError, match="--allow-pickle"):
        convert_official(tmp_path / "pkl", tmp_path / "out", encoder=tiny_dirs["bert"], lm=tiny_dirs["llama"])
    out = convert_official(
        tmp_path / "pkl",
        tmp_path / "out",
        encoder=tiny_dirs["bert"],
        lm=tiny_dirs["llama"],
        allow_pickle=True,
    )
    assert (out / "model.safetensors").exists()
    # A base LM of the wrong architecture is caught, and nothing is written.
    with pytest.raises(ValueError, match="which this model does not have"):
        convert_official(
            tmp_path / "pkl",
            tmp_path / "out2",
            encoder=tiny_dirs["bert"],
            lm=tiny_dirs["gpt2"],
            allow_pickle=True,
        )
    assert not (tmp_path / "out2").exists()
    config = json.loads((tmp_path / "pkl" / "config.json").read_text())
    (tmp_path / "pkl" / "config.json").write_text(json.dumps({**config, "dim_lm": 4096}))
    with pytest.raises(ValueError, match="dim_lm=4096"):
        convert_official(
            tmp_path / "pkl",
            tmp_path / "out3",
            encoder=tiny_dirs["bert"],
            lm=tiny_dirs["llama"],
            allow_pickle=True,
        )


def test_non_empty_destination_is_kept_unless_overwrite(tmp_path, tiny_dirs, capsys):
    """Issue 17 item 2: convert-official deleted everything already in DST (notes, an adapter), exit 0."""
    from langbridge.cli import main

    write_official_checkpoint(tmp_path / "official", tiny_dirs["bert"], tiny_dirs["llama"])
    dst = tmp_path / "dst"
    (dst / "adapter").mkdir(parents=True)
    (dst / "notes.txt").write_text("my notes")
    (dst / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    args = ["convert-official", str(tmp_path / "official"), str(dst)]
    args += ["--encoder", tiny_dirs["bert"], "--lm", tiny_dirs["llama"]]
    capsys.readouterr()  # drop the progress bars of building the official checkpoint
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "is not empty" in err and "--overwrite" in err and str(dst) in err and "\n" not in err
    assert (dst / "notes.txt").read_text() == "my notes"
    assert (dst / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst.")]  # no temp folder left

    # An existing file as DST is refused too; an empty folder is simply filled.
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="existing file"):
        convert_official(
            tmp_path / "official", tmp_path / "file", encoder=tiny_dirs["bert"], lm=tiny_dirs["llama"]
        )
    (tmp_path / "empty").mkdir()
    convert_official(
        tmp_path / "official", tmp_path / "empty", encoder=tiny_dirs["bert"], lm=tiny_dirs["llama"]
    )
    assert (tmp_path / "empty" / "config.json").is_file()

    # --overwrite replaces the folder as a whole, leaving no aside/temp folders behind.
    assert main([*args, "--overwrite"]) == 0
    assert (dst / "config.json").is_file() and not (dst / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_atomic_directory_keeps_a_dot_old_folder_of_the_user(tmp_path):
    from langbridge.utils import atomic_directory

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").write_text("old")
    (tmp_path / ".out.old").mkdir()  # the old helper's fixed aside name: someone's data here was deleted
    (tmp_path / ".out.old" / "keep").write_text("mine")
    with atomic_directory(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]
    assert (tmp_path / ".out.old" / "keep").read_text() == "mine"


def test_invalid_official_config_names_the_file(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_bytes(b"\xff\xfe{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        convert_official(tmp_path / "src", tmp_path / "out")
