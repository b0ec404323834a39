"""Core model: config, sequence assembly, padding invariance, generation, freezing, checkpoints."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from langbridge import LangBridgeConfig, LangBridgeModel, LangBridgeProcessor

TEXTS = [
    "What is 2 plus 3?",
    "Swali: Janet ana mayai 16. Anauza mayai 3 kila siku sokoni.",
    "জ্যানেটের হাঁসগুলি",
    "珍妮的鸭子每天下16个蛋。她每天早上吃三个。 Janet has 16 eggs and sells 3 of them every day.",
]
TARGETS = [" 5", " She sells 3 eggs.", " ১৬", " 13 eggs are left."]
PAIRS = [("bert", "llama"), ("mt5", "llama"), ("bert", "gpt2"), ("mt5", "gpt2")]


def text_logits(model, processor, batch, i):
    """Logits of example i on its real (non-padding) positions."""
    with torch.no_grad():
        logits = model(**batch).logits[i]
    return logits[batch["attention_mask"][i].bool()]


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none"
    )
    return losses.sum(1) / (shift_labels != -100).sum(1)


# ----------------------------------------------------------------------------------------------------------------
# Config
def test_config_holds_subconfigs_and_roundtrips(tmp_path, tiny_langbridge):
    model, _ = tiny_langbridge()
    config = model.config
    assert config.model_type == "langbridge"
    assert config.encoder_config.model_type == "bert" and config.lm_config.model_type == "llama"
    assert config.encoder_hidden_size == 32 and config.lm_hidden_size == 48
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LangBridgeConfig)
    assert loaded.lm_config.hidden_size == 48 and loaded.soft_token_id == config.soft_token_id
    assert loaded.encoder_name_or_path == config.encoder_name_or_path


@pytest.mark.parametrize(
    "kwargs, message",
    [({"bridge_type": "mlp"}, "bridge_type"), ({"max_encoder_length": 0}, "max_encoder_length")],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LangBridgeConfig(**kwargs)


def test_config_rejects_soft_token_outside_vocab():
    with pytest.raises(ValueError, match="soft_token_id"):
        LangBridgeConfig(lm_config={"model_type": "llama", "vocab_size": 10}, soft_token_id=99)


# ----------------------------------------------------------------------------------------------------------------
# Sequence assembly
def test_sequence_layout_bos_soft_eos_prompt(tiny_langbridge):
    model, processor = tiny_langbridge(processor_kwargs={"lm_prompt": " Answer:"})
    batch = processor(TEXTS[:2], padding_side="right")
    prompt_ids = processor.lm_tokenizer(" Answer:", add_special_tokens=False)["input_ids"]
    for i in range(2):
        n_enc = int(batch["encoder_attention_mask"][i].sum())
        row = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        assert row[0] == processor.lm_tokenizer.bos_token_id
        assert row[1 : 2 + n_enc] == [processor.soft_token_id] * (n_enc + 1)  # real tokens + enc_eos
        assert row[2 + n_enc :] == prompt_ids
        n_soft = batch["encoder_attention_mask"].sum(1) + 1
        slots = model.soft_token_mask(batch["input_ids"], batch["attention_mask"], n_soft)[i]
        assert slots.nonzero().squeeze(1).tolist() == list(range(1, 2 + n_enc))


def test_soft_slots_hold_bridged_states_and_enc_eos(tiny_langbridge):
    model, processor = tiny_langbridge()
    batch = processor(TEXTS[:1])
    captured = {}

    def grab(module, args, kwargs):
        captured["x"] = kwargs.get("hidden_states", args[0] if args else None)

    handle = model.lm.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**batch)
        hidden = model.encoder(
            input_ids=batch["encoder_input_ids"], attention_mask=batch["encoder_attention_mask"]
        ).last_hidden_state
        expected = torch.cat([model.bridge.linear(hidden)[0], model.bridge.enc_eos[None]], dim=0)
    handle.remove()
    n = expected.shape[0]
    assert torch.allclose(captured["x"][0, 1 : 1 + n], expected, atol=1e-6)
    bos = model.lm.get_input_embeddings().weight[processor.lm_tokenizer.bos_token_id]
    assert torch.allclose(captured["x"][0, 0], bos)


def test_gpt2_without_bos_starts_with_soft_tokens(tiny_langbridge):
    _, processor = tiny_langbridge("bert", "gpt2")
    assert processor.lm_prefix == ""
    batch = processor(TEXTS[:1], padding_side="right")
    n_enc = int(batch["encoder_attention_mask"][0].sum())
    assert batch["input_ids"][0, : n_enc + 1].tolist() == [processor.soft_token_id] * (n_enc + 1)


# ----------------------------------------------------------------------------------------------------------------
# Padding invariance: the heart of the issue
@pytest.mark.parametrize("encoder, lm", PAIRS)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_logits_and_loss_do_not_depend_on_batch(tiny_langbridge, encoder, lm, padding_side):
    model, processor = tiny_langbridge(encoder, lm, processor_kwargs={"lm_prompt": " A:"})
    batch = processor(TEXTS, targets=TARGETS, padding_side=padding_side)
    with torch.no_grad():
        batched = model(**batch).logits
    batched_loss = per_example_loss(batched, batch["labels"])
    for i in range(len(TEXTS)):
        single = processor(TEXTS[i : i + 1], targets=TARGETS[i : i + 1], padding_side=padding_side)
        with torch.no_grad():
            alone = model(**single).logits
        real = batch["attention_mask"][i].bool()
        torch.testing.assert_close(batched[i][real], alone[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            batched_loss[i], per_example_loss(alone, single["labels"])[0], atol=1e-5, rtol=0
        )


def test_left_and_right_padding_agree(tiny_langbridge):
    model, processor = tiny_langbridge()
    left = processor(TEXTS, targets=TARGETS, padding_side="left")
    right = processor(TEXTS, targets=TARGETS, padding_side="right")
    for i in range(len(TEXTS)):
        torch.testing.assert_close(
            text_logits(model, processor, left, i), text_logits(model, processor, right, i), atol=1e-5, rtol=0
        )


def test_labels_are_ignored_on_soft_positions(tiny_langbridge):
    model, processor = tiny_langbridge()
    batch = processor(TEXTS[:2], targets=TARGETS[:2], padding_side="right")
    assert (batch["labels"][batch["input_ids"] == processor.soft_token_id] == -100).all()
    polluted = batch["labels"].clone()
    polluted[batch["input_ids"] == processor.soft_token_id] = 5  # the model must mask these itself
    with torch.no_grad():
        clean = model(**batch).loss
        dirty = model(**{**batch, "labels": polluted}).loss
    torch.testing.assert_close(clean, dirty)


def test_targets_produce_labels_only_on_response(tiny_langbridge):
    _, processor = tiny_langbridge(processor_kwargs={"lm_prompt": " A:"})
    batch = processor(["hello there"], targets=[" five"], padding_side="right")
    target_ids = processor.lm_tokenizer(" five", add_special_tokens=False)["input_ids"]
    labels = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert labels == target_ids + [processor.lm_tokenizer.eos_token_id]
    no_eos = processor(["hello there"], targets=[" five"], append_eos=False, padding_side="right")
    assert no_eos["labels"][0][no_eos["labels"][0] != -100].tolist() == target_ids


# ----------------------------------------------------------------------------------------------------------------
# Generation
@pytest.mark.parametrize("encoder, lm", [("bert", "llama"), ("mt5", "gpt2")])
def test_batched_greedy_equals_single_and_cache_equals_no_cache(tiny_langbridge, encoder, lm):
    model, processor = tiny_langbridge(encoder, lm)
    batch = processor(TEXTS)
    width = batch["input_ids"].shape[1]
    greedy = model.generate(**batch, max_new_tokens=8, do_sample=False)
    uncached = model.generate(**batch, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(greedy, uncached)
    for i, text in enumerate(TEXTS):
        single = processor([text])
        alone = model.generate(**single, max_new_tokens=8, do_sample=False)
        assert alone[0, single["input_ids"].shape[1] :].tolist() == greedy[i, width:].tolist()


def test_encoder_runs_once_per_request(tiny_langbridge):
    model, processor = tiny_langbridge()
    calls = []
    handle = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    batch = processor(TEXTS[:2])
    for kwargs in ({}, {"use_cache": False}, {"num_beams": 3}, {"do_sample": True}):
        calls.clear()
        model.generate(**batch, max_new_tokens=6, **kwargs)
        assert len(calls) == 1, kwargs
    handle.remove()


def test_beam_search_and_sampling(tiny_langbridge):
    model, processor = tiny_langbridge()
    batch = processor(TEXTS[:2])
    width = batch["input_ids"].shape[1]
    beams = model.generate(**batch, max_new_tokens=6, num_beams=4, num_return_sequences=2, do_sample=False)
    assert beams.shape == (4, width + 6)
    # Beam search with one beam is greedy search.
    one_beam = model.generate(**batch, max_new_tokens=6, num_beams=1, do_sample=False)
    greedy = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(one_beam, greedy)
    # The best beam scores at least as well as greedy under the model.
    out = model.generate(
        **batch,
        max_new_tokens=6,
        num_beams=4,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert out.sequences_scores.shape == (2,)
    torch.manual_seed(1)
    sample_a = model.generate(**batch, max_new_tokens=6, do_sample=True, top_k=20)
    torch.manual_seed(1)
    sample_b = model.generate(**batch, max_new_tokens=6, do_sample=True, top_k=20)
    assert torch.equal(sample_a, sample_b)


def test_stops_on_eos_and_stop_strings(tiny_langbridge):
    model, processor = tiny_langbridge()
    batch = processor(TEXTS[:1])
    width = batch["input_ids"].shape[1]
    free = model.generate(**batch, max_new_tokens=8, do_sample=False)[0, width:]
    # EOS: declare the third generated token the end-of-sequence token.
    eos_id = int(free[2])
    first_eos = free.tolist().index(eos_id)
    stopped = model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=eos_id)[0, width:]
    assert stopped.tolist() == free[: first_eos + 1].tolist()
    # Stop string: the decoded text of the first three new tokens.
    stop = processor.lm_tokenizer.decode(free[:3])
    if stop.strip():
        out = model.generate(
            **batch, max_new_tokens=8, do_sample=False, stop_strings=[stop], tokenizer=processor.lm_tokenizer
        )
        assert out.shape[1] - width <= 3
    # max_new_tokens is respected.
    assert model.generate(**batch, max_new_tokens=2, do_sample=False).shape[1] == width + 2


def test_decode_new_tokens_returns_only_the_continuation(tiny_langbridge):
    model, processor = tiny_langbridge()
    batch = processor(TEXTS[:2])
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    texts = processor.decode_new_tokens(out, batch)
    assert len(texts) == 2
    assert texts[0] == processor.lm_tokenizer.decode(
        out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )


def test_mismatched_batch_gives_clear_error(tiny_langbridge):
    model, processor = tiny_langbridge()
    batch = processor(TEXTS[:1])
    # The encoder side now has more states than the LM side has slots.
    batch["encoder_input_ids"] = batch["encoder_input_ids"].repeat(1, 2)
    batch["encoder_attention_mask"] = batch["encoder_attention_mask"].repeat(1, 2)
    with pytest.raises(ValueError, match="soft-token slots"):
        model(**batch)
    with pytest.raises(ValueError, match="encoder_input_ids"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


# ----------------------------------------------------------------------------------------------------------------
# Freezing
@pytest.mark.parametrize("freeze_encoder", [True, False])
def test_optimizer_step_changes_exactly_the_trainable_parts(tiny_langbridge, freeze_encoder):
    model, processor = tiny_langbridge(freeze_encoder=freeze_encoder)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = processor(TEXTS, targets=TARGETS, padding_side="right")
    model(**batch).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert not any(n.startswith("lm.") for n in changed), "the LM (incl. lm_head) must stay frozen"
    assert {n for n in before if n.startswith("bridge.")} <= changed
    encoder_changed = {n for n in changed if n.startswith("encoder.")}
    assert bool(encoder_changed) == (not freeze_encoder)
    assert all(not p.requires_grad for p in model.lm.parameters())
    assert not model.lm.get_output_embeddings().weight.requires_grad
    summary = model.trainable_parameters_summary()
    assert "bridge" in summary and "trainable" in summary


def test_encoder_embeddings_can_train_alone(tiny_langbridge):
    model, _ = tiny_langbridge("mt5", "llama", train_encoder_embeddings=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("bridge.") for n in trainable)
    assert {n for n in trainable if n.startswith("encoder.")} == {"encoder.shared.weight"}


# ----------------------------------------------------------------------------------------------------------------
# Processor
def test_processor_uses_lm_prompts_and_left_pads(tiny_langbridge):
    _, processor = tiny_langbridge(processor_kwargs={"lm_prompt": " default"})
    batch = processor(TEXTS[:2], lm_prompts=[" one", " two two two"])
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]  # left padding: every row ends with a real token
    decoded = processor.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert decoded[0].endswith(" one") and decoded[1].endswith(" two two two")
    assert "default" not in "".join(decoded)


def test_processor_adds_t5_whitespace_tokens_and_model_resizes(tiny_langbridge, tiny_dirs):
    model, processor = tiny_langbridge("mt5", "llama")
    tokenizer = processor.encoder_tokenizer
    ids = tokenizer("a\tb\n  c")["input_ids"]
    for token in ("\t", "\n", "  "):
        assert tokenizer.convert_tokens_to_ids(token) in ids
    assert model.encoder.get_input_embeddings().num_embeddings >= len(tokenizer)
    with torch.no_grad():
        model(**processor(["x\ty\n    z"]))


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_input_is_a_clear_error(tiny_langbridge, bad):
    _, processor = tiny_langbridge()
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        processor(["fine", bad])
    with pytest.raises(ValueError, match="at least one"):
        processor([])


def test_overlong_inputs_are_truncated_with_warning(tiny_langbridge):
    _, processor = tiny_langbridge(processor_kwargs={"max_encoder_length": 8, "max_lm_length": 12})
    with pytest.warns(UserWarning, match="max_encoder_length=8"):
        batch = processor([TEXTS[3]], targets=[" a b c d e f g h i j k l m n o p"])
    assert batch["encoder_input_ids"].shape[1] == 8
    n_text = int((batch["input_ids"][0] != processor.soft_token_id).sum())
    assert n_text <= 12


def test_prompt_filling_the_lm_budget_warns_that_no_target_is_left(tiny_langbridge):
    _, processor = tiny_langbridge(processor_kwargs={"max_lm_length": 4})
    with pytest.warns(UserWarning, match="no target tokens left"):
        batch = processor([TEXTS[0]], lm_prompts=[" a b c d e f"], targets=[" answer"])
    assert bool((batch["labels"] == -100).all())


def test_processor_argument_errors(tiny_langbridge, tiny_dirs):
    _, processor = tiny_langbridge()
    with pytest.raises(ValueError, match="lm_prompts has 1 entries"):
        processor(["a", "b"], lm_prompts=["x"])
    with pytest.raises(ValueError, match="padding_side"):
        processor(["a"], padding_side="middle")
    with pytest.raises(ValueError, match="\\{text\\}"):
        LangBridgeProcessor.from_encoder_and_lm(
            tiny_dirs["bert"], tiny_dirs["llama"], encoder_template="no slot"
        )


def test_processor_roundtrip(tmp_path, tiny_langbridge):
    _, processor = tiny_langbridge(processor_kwargs={"lm_prompt": " A:", "encoder_template": "Q: {text}"})
    processor.save_pretrained(tmp_path)
    loaded = LangBridgeProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    a, b = processor(TEXTS), loaded(TEXTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="not a saved LangBridgeProcessor"):
        LangBridgeProcessor.from_pretrained(tmp_path / "nowhere")


def test_placeholder_id_lives_in_the_config_and_lengths_in_the_processor(tmp_path, tiny_dirs):
    """The processor owns the placeholder token and the truncation lengths; the model config stores the id once."""
    processor = LangBridgeProcessor.from_encoder_and_lm(
        tiny_dirs["bert"], tiny_dirs["llama"], max_lm_length=64
    )
    model = LangBridgeModel.from_encoder_and_lm(tiny_dirs["bert"], tiny_dirs["llama"], processor=processor)
    assert model.config.soft_token_id == processor.soft_token_id
    assert processor.lm_tokenizer.convert_tokens_to_ids(processor.soft_token) == processor.soft_token_id
    model.save_pretrained(tmp_path, adapter_only=True)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    settings = json.loads((tmp_path / "langbridge_processor.json").read_text())
    assert "max_lm_length" not in config and "max_encoder_length" not in config
    assert "soft_token_id" not in settings and settings["max_lm_length"] == 64
    assert LangBridgeProcessor.from_pretrained(tmp_path).soft_token_id == model.config.soft_token_id


def test_checkpoint_written_before_the_placeholder_token_still_loads(tmp_path, tiny_langbridge):
    """Older checkpoints: lengths in config.json too, the id in langbridge_processor.json."""
    model, processor = tiny_langbridge()
    model.save_pretrained(tmp_path, adapter_only=True)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**config, "max_encoder_length": 512, "max_lm_length": 1024})
    )
    settings = json.loads((tmp_path / "langbridge_processor.json").read_text())
    del settings["soft_token"]
    settings["soft_token_id"] = model.config.soft_token_id
    (tmp_path / "langbridge_processor.json").write_text(json.dumps(settings))
    loaded = LangBridgeModel.from_pretrained(tmp_path)
    loaded_processor = LangBridgeProcessor.from_pretrained(tmp_path)
    assert loaded_processor.soft_token_id == loaded.config.soft_token_id == processor.soft_token_id
    assert not hasattr(loaded.config, "max_lm_length")
    batch = loaded_processor(TEXTS[:2])
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
@pytest.mark.parametrize("adapter_only", [False, True])
@pytest.mark.parametrize("bridge", ["linear", "ffn"])
def test_save_and_load_roundtrip(tmp_path, tiny_langbridge, adapter_only, bridge):
    model, processor = tiny_langbridge(bridge=bridge, freeze_encoder=not adapter_only)
    with torch.no_grad():
        model.bridge.enc_eos.add_(0.5)  # make sure trained weights, not a fresh init, come back
    batch = processor(TEXTS[:2])
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path, adapter_only=adapter_only)
    processor.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert ("adapter_model.safetensors" in files) == adapter_only
    assert ("model.safetensors" in files) == (not adapter_only)
    assert {"config.json", "encoder_tokenizer", "lm_tokenizer"} <= files
    assert not any(name.endswith(".bin") for name in files)
    for loader in (LangBridgeModel.from_pretrained, AutoModelForCausalLM.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded, LangBridgeModel)
        loaded_processor = LangBridgeProcessor.from_pretrained(tmp_path)
        with torch.no_grad():
            got = loaded(**loaded_processor(TEXTS[:2])).logits
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        assert all(not p.requires_grad for p in loaded.lm.parameters())


def test_adapter_is_small_and_holds_trained_encoder(tmp_path, tiny_langbridge):
    model, _ = tiny_langbridge(freeze_encoder=False)
    keys = set(model.adapter_state_dict())
    assert any(k.startswith("encoder.") for k in keys) and "bridge.enc_eos" in keys
    frozen, _ = tiny_langbridge(freeze_encoder=True)
    assert {k.split(".")[0] for k in frozen.adapter_state_dict()} == {"bridge"}


def test_pickle_checkpoints_are_refused(tmp_path, tiny_langbridge):
    model, _ = tiny_langbridge()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        LangBridgeModel.from_pretrained(tmp_path)


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path, tiny_langbridge):
    model, _ = tiny_langbridge()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LangBridgeModel.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        LangBridgeModel.from_pretrained(tmp_path / "adapter")
    model.save_pretrained(tmp_path / "full")
    weights = tmp_path / "full" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="Could not load"):
        LangBridgeModel.from_pretrained(tmp_path / "full")


def test_adapter_on_wrong_base_model_is_rejected(tmp_path, tiny_langbridge, tiny_dirs):
    model, _ = tiny_langbridge("bert", "llama")
    model.save_pretrained(tmp_path, adapter_only=True)
    with pytest.raises(ValueError, match="different base LM"):
        LangBridgeModel.from_pretrained(tmp_path, lm=tiny_dirs["gpt2"])
    config = json.loads((tmp_path / "config.json").read_text())
    config["lm_name_or_path"] = str(Path(tmp_path) / "missing-lm")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match="Could not load the LM config"):
        LangBridgeModel.from_pretrained(tmp_path)


def test_wrong_model_roles_are_rejected(tiny_dirs):
    with pytest.raises(ValueError, match="decoder-only causal LM"):
        LangBridgeModel.from_encoder_and_lm(tiny_dirs["bert"], tiny_dirs["bert"])
    with pytest.raises(ValueError, match="encoder must be an encoder model"):
        LangBridgeModel.from_encoder_and_lm(tiny_dirs["llama"], tiny_dirs["llama"])


def test_accepts_built_models(tiny_dirs):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_dirs["bert"])
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LangBridgeModel.from_encoder_and_lm(encoder, lm, bridge="ffn")
    assert model.encoder is encoder and model.lm is lm
    assert model.config.bridge_type == "ffn"


# ----------------------------------------------------------------------------------------------------------------
# Training fast path: the LM head only where the loss needs it
@pytest.mark.parametrize("encoder, lm", [("bert", "llama"), ("mt5", "gpt2")])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_logits_to_keep_targets_gives_the_same_loss_and_gradients(tiny_langbridge, encoder, lm, padding_side):
    model, processor = tiny_langbridge(encoder, lm, processor_kwargs={"lm_prompt": " A:"})
    batch = processor(TEXTS, targets=TARGETS, padding_side=padding_side)
    full = model(**batch)
    full.loss.backward()
    grads = [p.grad.clone() for p in model.bridge.parameters()]
    model.zero_grad()
    lm_masks = []
    hook = model.lm.base_model.register_forward_pre_hook(
        lambda module, args, kwargs: lm_masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    kept = model(**batch, logits_to_keep="targets")
    hook.remove()
    kept.loss.backward()
    # Right-padded batches run causal attention without a padding mask; left padding needs the mask.
    assert not batch["attention_mask"].all()
    assert (lm_masks[0] is None) == (padding_side == "right")
    torch.testing.assert_close(kept.loss, full.loss, atol=1e-6, rtol=1e-6)
    for g, p in zip(grads, model.bridge.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    assert kept.logits is None  # the fused head keeps no vocabulary-sized tensor
    with pytest.raises(ValueError, match="needs labels"):
        model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep="targets")
    with pytest.raises(ValueError, match="use an int"):
        model(**batch, logits_to_keep="all")


def _granite_langbridge(tiny_dirs):
    """A LangBridge model whose LM scales its logits (Granite): not a plain head, so the LM's own loss is used."""
    from transformers import GraniteConfig, GraniteForCausalLM

    llama = AutoConfig.from_pretrained(tiny_dirs["llama"])
    torch.manual_seed(0)
    lm = GraniteForCausalLM(
        GraniteConfig(
            vocab_size=llama.vocab_size,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
            logits_scaling=4.0,
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LangBridgeModel.from_encoder_and_lm(tiny_dirs["bert"], lm).eval()
    processor = LangBridgeProcessor.from_encoder_and_lm(
        tiny_dirs["bert"], tiny_dirs["llama"], soft_token_id=model.config.soft_token_id
    )
    return model, processor


@pytest.mark.parametrize("head", ["plain", "scaled", "trainable"])
def test_target_loss_on_every_head_kind(tiny_langbridge, tiny_dirs, head):
    """The fused loss (plain frozen head) and the LM's own loss (scaled logits, a head left trainable) both equal the
    full-logits loss; a batch without targets gives a zero that still reaches the bridge."""
    from langbridge.modeling import _has_plain_head

    if head == "scaled":
        model, processor = _granite_langbridge(tiny_dirs)
    else:
        model, processor = tiny_langbridge("bert", "llama")
    if head == "trainable":
        model.lm.get_output_embeddings().weight.requires_grad_(True)
    assert _has_plain_head(model.lm) == (head != "scaled")
    batch = processor(TEXTS, targets=TARGETS)
    full = model(**batch)
    kept = model(**batch, logits_to_keep="targets")
    torch.testing.assert_close(kept.loss, full.loss, atol=1e-6, rtol=1e-6)
    assert kept.logits is None
    none = dict(batch, labels=torch.full_like(batch["labels"], -100))
    zero = model(**none, logits_to_keep="targets").loss
    assert float(zero.detach()) == 0.0
    zero.backward()
    assert all(p.grad is not None for p in model.bridge.parameters())
