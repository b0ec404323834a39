"""The bridge options beyond the paper (layer choice and mix, input norm, soft-token norm), the reconstruction
mode and mixed objectives of the data pipeline, and starting a bridge from another run's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from langbridge import LangBridgeConfig, LangBridgeModel
from langbridge.training.config import ConfigError, DataConfig, DataSource
from langbridge.training.data import Collator, build_data, split_sentences


def _bridged(model, processor, texts):
    batch = processor(texts, padding_side="right")
    with torch.no_grad():
        return model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])


def test_default_bridge_is_the_papers(tiny_langbridge) -> None:
    model, _ = tiny_langbridge()
    names = {n for n, _ in model.bridge.named_parameters()}
    assert names == {"enc_eos", "linear.weight", "linear.bias"}


def test_encoder_layer_reads_that_hidden_state(tiny_langbridge) -> None:
    model, processor = tiny_langbridge(encoder_layer=1)
    batch = processor(["hello world", "a longer input sentence here"], padding_side="right")
    with torch.no_grad():
        states = model.encoder(
            input_ids=batch["encoder_input_ids"],
            attention_mask=batch["encoder_attention_mask"],
            output_hidden_states=True,
        ).hidden_states
        embeds, mask = model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
        expected = model.bridge.linear(states[1])
    assert torch.allclose(embeds[:, :-1], expected, atol=1e-6)
    assert not torch.allclose(states[1], states[-1])


def test_layer_mix_is_a_softmax_over_all_states_and_trains(tiny_langbridge) -> None:
    model, processor = tiny_langbridge(encoder_layer_mix=True)
    assert model.bridge.layer_weights.shape == (model.config.num_encoder_states,) == (3,)
    batch = processor(["hello world"], padding_side="right")
    with torch.no_grad():
        states = torch.stack(
            model.encoder(
                input_ids=batch["encoder_input_ids"],
                attention_mask=batch["encoder_attention_mask"],
                output_hidden_states=True,
            ).hidden_states
        )
        model.bridge.layer_weights.copy_(torch.tensor([0.0, 1.0, -1.0]))
        w = torch.softmax(model.bridge.layer_weights, 0)
        embeds, _ = model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
    mixed = (w[:, None, None, None] * states).sum(0)
    assert torch.allclose(embeds[:, :-1], model.bridge.linear(mixed), atol=1e-5)
    model.train()
    out = model(**processor(["hello world"], targets=["ok"], padding_side="right"))
    out.loss.backward()
    assert model.bridge.layer_weights.grad is not None and model.bridge.layer_weights.grad.abs().sum() > 0


def test_input_norm_and_soft_token_norm(tiny_langbridge) -> None:
    model, processor = tiny_langbridge(bridge_input_norm=True, soft_token_norm="lm")
    target = model.config.soft_token_norm
    lm_norm = float(model.lm.get_input_embeddings().weight.norm(dim=-1).mean())
    assert target == pytest.approx(lm_norm, abs=1e-3)
    embeds, mask = _bridged(model, processor, ["hello world", "short"])
    real = embeds[:, :-1][mask[:, :-1]]
    assert torch.allclose(real.norm(dim=-1), torch.full((len(real),), target), atol=1e-4)
    # A large shared offset of the encoder states is removed by the input norm.
    shifted = model.bridge.features(torch.randn(1, 3, 32) + 50.0)
    assert float(shifted.mean(-1).abs().max()) < 1e-4


def test_options_survive_save_and_load(tiny_langbridge, tmp_path: Path) -> None:
    model, processor = tiny_langbridge(encoder_layer_mix=True, bridge_input_norm=True, soft_token_norm=2.5)
    with torch.no_grad():
        model.bridge.layer_weights.copy_(torch.tensor([0.3, -0.2, 0.1]))
    for adapter_only in (False, True):
        path = tmp_path / f"ckpt-{adapter_only}"
        model.save_pretrained(path, adapter_only=adapter_only)
        processor.save_pretrained(path)
        loaded = LangBridgeModel.from_pretrained(path).eval()
        assert loaded.config.encoder_layer_mix and loaded.config.bridge_input_norm
        assert loaded.config.soft_token_norm == 2.5
        a, _ = _bridged(model, processor, ["hello world"])
        b, _ = _bridged(loaded, processor, ["hello world"])
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_options_are_refused(tiny_dirs) -> None:
    with pytest.raises(ValueError, match="encoder_layer=7 is outside"):
        LangBridgeModel.from_encoder_and_lm(tiny_dirs["bert"], tiny_dirs["llama"], encoder_layer=7)
    with pytest.raises(ValueError, match="soft_token_norm"):
        LangBridgeConfig(soft_token_norm=-1.0)


# ----------------------------------------------------------------------------- data


def test_split_sentences() -> None:
    text = 'Dr. Smith arrived. "Is it late?" he asked. Short. It was 5 p.m. and the rain (light) had stopped.'
    assert split_sentences(text) == [
        '"Is it late?" he asked.',
        "It was 5 p.m. and the rain (light) had stopped.",
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reconstruction_mode_and_mixed_objectives(tiny_langbridge, tmp_path: Path) -> None:
    _, processor = tiny_langbridge()
    docs = _write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"text": "The cat sat on the mat today. Then it slept for a while."},
            {"text": "Rain fell on the hills all night."},
        ],
    )
    instr = _write_jsonl(tmp_path / "instr.jsonl", [{"instruction": "Say hi to me", "output": "Hi there"}])
    cfg = DataConfig(
        mode="labeled",
        train=[
            DataSource(path=str(docs), mode="reconstruction", lm_prompt="\nRewrite:"),
            DataSource(path=str(instr)),
            DataSource(path=str(docs), mode="unlabeled", lm_prompt=""),
        ],
        min_split_tokens=2,
        max_split_tokens=4,
        max_lm_length=64,
    )
    data = build_data(cfg, processor, seed=0)
    examples = [data.train[i] for i in range(len(data.train))]
    recon = [e for e in examples if e.lm_prompt == "\nRewrite:"]
    assert [e.encoder_text for e in recon] == [
        "The cat sat on the mat today.",
        "Then it slept for a while.",
        "Rain fell on the hills all night.",
    ]
    assert all(e.target == e.encoder_text and e.append_eos for e in recon)
    labeled = [e for e in examples if e.lm_prompt is None]
    assert [(e.target, e.append_eos) for e in labeled] == [("Hi there", None)]
    unlabeled = [e for e in examples if e.lm_prompt == ""]
    assert len(unlabeled) == 2 and all(e.append_eos is False for e in unlabeled)
    assert all(
        e.encoder_text + e.target
        in ("The cat sat on the mat today. Then it slept for a while.", "Rain fell on the hills all night.")
        for e in unlabeled
    )

    batch = Collator(processor, append_eos=True)([recon[0], labeled[0], unlabeled[0]])
    eos = processor.lm_tokenizer.eos_token_id
    for row, ex in enumerate([recon[0], labeled[0], unlabeled[0]]):
        targets = batch["labels"][row][batch["labels"][row] != -100].tolist()
        want = processor.lm_tokenizer(ex.target, add_special_tokens=False)["input_ids"]
        assert targets == want + ([eos] if ex.append_eos is not False else [])
        prompt = processor.lm_prompt if ex.lm_prompt is None else ex.lm_prompt
        ids = batch["input_ids"][row].tolist()
        prompt_ids = processor.lm_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        first_target = (batch["labels"][row] != -100).nonzero()[0, 0].item()
        assert ids[first_target - len(prompt_ids) : first_target] == prompt_ids


def test_next_sentence_mode_pairs_consecutive_sentences(tiny_langbridge, tmp_path: Path) -> None:
    _, processor = tiny_langbridge()
    docs = _write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"text": "The cat sat on the mat today. Then it slept for a while.\nLater the dog came home."},
            {"text": "Rain fell on the hills all night."},
        ],
    )
    cfg = DataConfig(mode="next_sentence", train=[DataSource(path=str(docs), lm_prompt="\n")], max_lm_length=64)
    data = build_data(cfg, processor, seed=0)
    pairs = [(e.encoder_text, e.target, e.lm_prompt, e.append_eos) for e in data.train]
    # Pairs stay inside one document (across its lines); a one-sentence document gives none.
    assert pairs == [
        ("The cat sat on the mat today.", "Then it slept for a while.", "\n", False),
        ("Then it slept for a while.", "Later the dog came home.", "\n", False),
    ]


def test_init_bridge_from_checkpoint(tiny_langbridge, tmp_path: Path) -> None:
    from langbridge.training.recipe import init_bridge

    source, processor = tiny_langbridge(encoder_layer_mix=True)
    with torch.no_grad():
        for p in source.bridge.parameters():
            p.add_(0.5)
    source.save_pretrained(tmp_path / "stage1", adapter_only=True)
    target, _ = tiny_langbridge(encoder_layer_mix=True)
    init_bridge(target, str(tmp_path / "stage1"))
    for (name, a), b in zip(
        source.bridge.state_dict().items(), target.bridge.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    other, _ = tiny_langbridge()
    with pytest.raises(ConfigError, match="init_bridge_from.*layer_weights"):
        init_bridge(other, str(tmp_path / "stage1"))
    with pytest.raises(ConfigError, match="no adapter_model.safetensors"):
        init_bridge(other, str(tmp_path))


def test_ridge_fit_is_the_least_squares_start(tiny_langbridge) -> None:
    from langbridge.bridge_init import aligned_lm_tokens, fit_linear_bridge

    model, processor = tiny_langbridge(bridge_input_norm=True)
    texts = [f"the {w} sat on a mat number {i}." for i, w in enumerate(["cat", "dog", "bird", "cow"] * 12)]
    stats = fit_linear_bridge(model, processor, texts, ridge=1e-3)
    assert stats["pairs"] > 100 and 0 < stats["r2"] <= 1

    def sse() -> float:
        enc = processor.encoder_tokenizer(
            texts, return_offsets_mapping=True, padding=True, return_tensors="pt"
        )
        offsets = enc.pop("offset_mapping")
        with torch.no_grad():
            pred = model.bridge.linear(
                model.bridge.features(model.encoder_states(enc["input_ids"], enc["attention_mask"]))
            )
        emb = model.lm.get_input_embeddings().weight
        total = 0.0
        for row, text in enumerate(texts):
            real = enc["attention_mask"][row].bool()
            ids = torch.tensor(aligned_lm_tokens(processor.lm_tokenizer, text, offsets[row][real].tolist()))
            keep = ids >= 0
            total += float(((pred[row][real][keep] - emb[ids[keep]]) ** 2).sum())
        return total

    best = sse()
    with torch.no_grad():
        model.bridge.linear.weight.add_(torch.randn_like(model.bridge.linear.weight) * 1e-2)
    assert sse() > best


def test_aligned_lm_tokens_follow_characters(tiny_langbridge) -> None:
    from langbridge.bridge_init import aligned_lm_tokens

    _, processor = tiny_langbridge()
    text = "hello world"
    lm_ids = processor.lm_tokenizer(text, add_special_tokens=False)["input_ids"]
    got = aligned_lm_tokens(processor.lm_tokenizer, text, [(0, 0), (0, 5), (6, 11)])
    assert got[0] == -1 and got[1] in lm_ids and got[2] in lm_ids
