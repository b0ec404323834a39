"""LangBridgeModel: encoder -> bridge -> soft tokens merged into a frozen causal LM's input embeddings.

The design follows transformers' VLMs (LLaVA): the LM sequence holds placeholder slots that are filled with the
bridged encoder states by `masked_scatter`, so `generate`, the KV cache, left padding, beam search and sampling all
come from `GenerationMixin` unchanged. Only real (non-padding) encoder tokens get a slot, so padding never occupies a
position id and an example's logits do not depend on the rest of its batch.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from langbridge.bridge import Bridge, build_bridge
from langbridge.checkpoint import load_checkpoint, save_checkpoint
from langbridge.configuration import DEFAULT_BRIDGE_TYPE, LangBridgeConfig
from langbridge.continuous_batching import growing_cache, supports_continuous_batching
from langbridge.linear_cross_entropy import linear_cross_entropy
from langbridge.loaders import build_encoder, default_soft_token_id, lm_embedding_norm, load_base_models

# The config's own settings (everything but the two base-model configs): what an adapter rebuilds from.
OWN_CONFIG_FIELDS = tuple(
    n for n in LangBridgeConfig.__annotations__ if n not in ("encoder_config", "lm_config")
)


class LangBridgePreTrainedModel(PreTrainedModel):
    config: LangBridgeConfig
    config_class = LangBridgeConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False  # the number of soft slots is data-dependent

    def _init_weights(self, module: torch.nn.Module) -> None:
        # Encoder and LM arrive initialized (pretrained or by their own post_init); only the bridge is ours.
        if isinstance(module, Bridge):
            module.reset_parameters(std=getattr(self.config.lm_config, "initializer_range", 0.02))


class LangBridgeModel(LangBridgePreTrainedModel, GenerationMixin):
    """Multilingual encoder + bridge + frozen causal LM. Parts: `model.encoder`, `model.bridge`, `model.lm`."""

    def __init__(
        self,
        config: LangBridgeConfig,
        encoder: PreTrainedModel | None = None,
        lm: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder_config)
        self.lm = lm if lm is not None else AutoModelForCausalLM.from_config(config.lm_config)
        self.bridge = build_bridge(
            config.bridge_type,
            config.encoder_hidden_size,
            config.lm_hidden_size,
            config.ffn_multiplier,
            num_layers=config.num_encoder_states if config.encoder_layer_mix else 0,
            input_norm=config.bridge_input_norm,
            output_norm=config.soft_token_norm,
        )
        if getattr(self.lm, "generation_config", None) is not None:
            self.generation_config = copy.deepcopy(self.lm.generation_config)
        self.post_init()
        self.apply_freezing()

    # ---------------------------------------------------------------------------------------------------------
    # Construction
    @classmethod
    def from_encoder_and_lm(
        cls,
        encoder: str | os.PathLike | PreTrainedModel,
        lm: str | os.PathLike | PreTrainedModel,
        bridge: str = DEFAULT_BRIDGE_TYPE,
        freeze_encoder: bool = True,
        dtype: torch.dtype | str | None = None,
        allow_pickle: bool = False,
        processor: Any = None,
        **config_kwargs: Any,
    ) -> LangBridgeModel:
        """Build a LangBridge model from an encoder and an LM (a local directory, a hub id, an alias of a bundled
        default model, or an already-built `PreTrainedModel`). The bridge starts from random weights.
        `soft_token_norm="lm"` sets the soft-token norm to the LM's mean token-embedding norm. `processor`: the
        `LangBridgeProcessor` the model will read batches from; the config stores its placeholder id (without
        one, the id a default processor picks for the LM's tokenizer)."""
        encoder_model, encoder_source, lm_model, lm_source = load_base_models(
            encoder, lm, dtype=dtype, allow_pickle=allow_pickle
        )
        if config_kwargs.get("soft_token_norm") == "lm":
            config_kwargs["soft_token_norm"] = lm_embedding_norm(lm_model)
        if "soft_token_id" not in config_kwargs:
            config_kwargs["soft_token_id"] = (
                processor.soft_token_id
                if processor is not None
                else default_soft_token_id(lm_model, lm_source)
            )
        # Settings given as config fields (`bridge_type=`, as in a training config's `model_settings`) win.
        settings = {"bridge_type": bridge, "freeze_encoder": freeze_encoder, **config_kwargs}
        config = LangBridgeConfig(
            encoder_config=encoder_model.config.to_dict(),
            lm_config=lm_model.config.to_dict(),
            encoder_name_or_path=encoder_source,
            lm_name_or_path=lm_source,
            **settings,
        )
        model = cls(config, encoder=encoder_model, lm=lm_model)
        return model.to(lm_model.dtype)

    @classmethod
    def from_config_and_parts(
        cls, config: LangBridgeConfig, encoder: PreTrainedModel, lm: PreTrainedModel
    ) -> LangBridgeModel:
        """`config`'s own settings (bridge, freezing, placeholder, sources) on these base models: how an adapter
        checkpoint is rebuilt. The base-model configs are the loaded models' own."""
        config = LangBridgeConfig(
            encoder_config=encoder.config.to_dict(),
            lm_config=lm.config.to_dict(),
            **{name: getattr(config, name) for name in OWN_CONFIG_FIELDS},
        )
        return cls(config, encoder=encoder, lm=lm).to(lm.dtype)

    def apply_freezing(self) -> None:
        """LM fully frozen (embeddings, every layer, the output head); encoder frozen or trained by config."""
        self.lm.requires_grad_(False)
        self.encoder.requires_grad_(not self.config.freeze_encoder)
        if self.config.freeze_encoder and self.config.train_encoder_embeddings:
            self.encoder.get_input_embeddings().weight.requires_grad_(True)
        self.bridge.requires_grad_(True)

    # ---------------------------------------------------------------------------------------------------------
    # Embedding accessors used by transformers utilities
    def get_input_embeddings(self) -> torch.nn.Module:
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.lm.set_input_embeddings(value)

    def get_output_embeddings(self) -> torch.nn.Module | None:
        return self.lm.get_output_embeddings()

    # ---------------------------------------------------------------------------------------------------------
    # Forward
    def encode(
        self, encoder_input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run encoder + bridge. Returns `(bridged_embeds [B, S+1, D_lm], bridged_mask [B, S+1])`."""
        if encoder_attention_mask is None:
            encoder_attention_mask = torch.ones_like(encoder_input_ids)
        hidden = self.encoder_states(encoder_input_ids, encoder_attention_mask)
        bridge_dtype = self.bridge.enc_eos.dtype
        embeds, mask = self.bridge(hidden.to(bridge_dtype), encoder_attention_mask)
        return embeds.to(self.get_input_embeddings().weight.dtype), mask

    def encoder_states(
        self, encoder_input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """What the bridge reads: the configured encoder layer `[B, S, H]`, or all hidden states `[L, B, S, H]`."""
        encoder_trainable = any(p.requires_grad for p in self.encoder.parameters())
        # A frozen encoder needs no activation memory for backward.
        mix, layer = self.config.encoder_layer_mix, self.config.encoder_layer
        with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trainable):
            out = self.encoder(
                input_ids=encoder_input_ids,
                attention_mask=encoder_attention_mask,
                output_hidden_states=mix or layer != -1,
            )
        if mix:
            return torch.stack(out.hidden_states)
        return out.hidden_states[layer] if layer != -1 else out.last_hidden_state

    def soft_token_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, n_soft: torch.Tensor
    ) -> torch.Tensor:
        """Positions of the soft slots: the first `n_soft[i]` attended placeholder ids of each row.

        Counting only the first ones keeps a generated token that happens to equal the placeholder id out of it.
        """
        is_slot = input_ids == self.config.soft_token_id
        if attention_mask is not None:
            is_slot &= attention_mask.bool()
        return is_slot & (is_slot.cumsum(dim=1) <= n_soft.unsqueeze(1))

    def merge_soft_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor,
        bridged_embeds: torch.Tensor,
        bridged_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_soft = bridged_mask.sum(dim=1)
        slots = self.soft_token_mask(input_ids, attention_mask, n_soft)
        found = slots.sum(dim=1)
        if not torch.equal(found, n_soft):
            bad = int((found != n_soft).nonzero()[0, 0])
            raise ValueError(
                f"Example {bad}: the LM input has {int(found[bad])} soft-token slots (id {self.config.soft_token_id}) but "
                f"the encoder produced {int(n_soft[bad])} states (real tokens + end-of-encoder). Build batches with "
                "the LangBridgeProcessor that belongs to this model (same LM tokenizer and soft_token_id)."
            )
        features = bridged_embeds[bridged_mask.bool()].to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(slots.unsqueeze(-1), features), slots

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_input_ids: torch.LongTensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        bridged_embeds: torch.Tensor | None = None,
        bridged_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor | str = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        r"""
        encoder_input_ids / encoder_attention_mask: the encoder side built by `LangBridgeProcessor`.
        bridged_embeds / bridged_mask: precomputed `encode(...)` output (used by `generate` so the encoder runs once).
        input_ids / attention_mask: the LM side with soft-token slots. labels: -100 on everything but the target.
        logits_to_keep: as in transformers (0 = all positions, n = the last n, or a tensor of positions), or
            "targets" with `labels` (training): the loss only, with the LM head applied just where a target is
            predicted; `logits` is None. The loss and its gradients are unchanged; the head skips the soft slots,
            the prompt and the padding, and for LMs with a plain frozen head (PLAIN_HEAD_MODEL_TYPES) the
            cross-entropy runs fused and chunked (linear_cross_entropy) without keeping vocabulary-sized logits.
            A right-padded batch runs the LM with causal attention and no padding mask (exact for real tokens).
        """
        slots = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (the LM side from LangBridgeProcessor) or inputs_embeds.")
            inputs_embeds = self.get_input_embeddings()(input_ids)
            # The soft slots are in this call's input when it starts at the first position (training, prefill,
            # or generation without cache); later cached decoding steps only carry new tokens.
            starts_at_zero = cache is None or cache.get_seq_length() == 0
            if starts_at_zero:
                if bridged_embeds is None:
                    if encoder_input_ids is None:
                        raise ValueError(
                            "encoder_input_ids is missing: LangBridgeModel needs the encoder side of the batch "
                            "(call the LangBridgeProcessor and pass all of its outputs)."
                        )
                    bridged_embeds, bridged_mask = self.encode(encoder_input_ids, encoder_attention_mask)
                inputs_embeds, slots = self.merge_soft_tokens(
                    input_ids, attention_mask, inputs_embeds, bridged_embeds, bridged_mask
                )
        if (
            isinstance(logits_to_keep, str)
            and position_ids is None
            and attention_mask is not None
            and attention_mask.ndim == 2
            and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())
        ):
            # Right padding (training batches): every real token comes before its row's padding, so causal attention
            # alone is exact for it and its positions are 0..n-1. Without a padding mask, SDPA and flash attention
            # run their causal kernels, which skip the masked upper triangle instead of computing and discarding it.
            attention_mask = None
        if position_ids is None and attention_mask is not None:
            # Positions count real tokens only, so left padding does not shift an example.
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = positions[:, -inputs_embeds.shape[1] :]
        if labels is not None and slots is not None:
            labels = labels.masked_fill(slots, -100)
        if isinstance(logits_to_keep, str):
            return self._target_loss(
                logits_to_keep, inputs_embeds, attention_mask, position_ids, labels, **kwargs
            )
        if use_cache is None and labels is not None and cache is None:
            use_cache = False  # a loss computation has no later step to reuse keys and values in
        return self.lm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def _target_loss(
        self,
        mode: str,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        labels: torch.Tensor | None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """The loss of `logits_to_keep="targets"`: the LM head only where a target is predicted."""
        if mode != "targets":
            raise ValueError(f"logits_to_keep={mode!r}: use an int, a tensor of positions, or 'targets'.")
        if labels is None:
            raise ValueError(
                "logits_to_keep='targets' needs labels (it keeps the positions that predict them)."
            )
        head = self.lm.get_output_embeddings()
        lm_inputs = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
        }
        if _has_plain_head(self.lm) and not head.weight.requires_grad:
            num_items = kwargs.pop("num_items_in_batch", None)
            hidden = self.lm.base_model(**lm_inputs, use_cache=False, **kwargs).last_hidden_state
            # The hidden state at position p predicts the token at p + 1.
            shifted = labels[:, 1:]
            rows = shifted != -100
            loss = linear_cross_entropy(hidden[:, :-1][rows], head.weight, shifted[rows], num_items)
            return CausalLMOutputWithPast(loss=loss)
        # Any other LM (a scaled or soft-capped head, a trainable head): its own loss over the positions from the
        # one before the batch's first target on.
        has_target = (labels != -100).any(dim=0).nonzero()
        if not has_target.numel():  # nothing to learn from: a zero that keeps the graph (data parallelism)
            out = self.lm(**lm_inputs, use_cache=False, logits_to_keep=1, **kwargs)
            return CausalLMOutputWithPast(loss=out.logits.sum() * 0.0)
        keep = labels.shape[1] - max(int(has_target[0, 0]) - 1, 0)
        out = self.lm(**lm_inputs, labels=labels[:, -keep:], use_cache=False, logits_to_keep=keep, **kwargs)
        return CausalLMOutputWithPast(loss=out.loss)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_input_ids: torch.LongTensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """`GenerationMixin.generate` with the encoder run once up front; its output rides along as model kwargs
        (expanded for beam search / multiple return sequences like any other per-example tensor). Without a cache
        or cache_implementation given, LMs with plain full-attention layers decode into a `growing_cache`."""
        if kwargs.get("inputs_embeds") is not None:
            # The LM's embeddings are built from input_ids and the bridged encoder states; these would be dropped.
            raise ValueError(
                "LangBridgeModel.generate does not take inputs_embeds; pass the processor's outputs "
                "(input_ids, attention_mask, encoder_input_ids, encoder_attention_mask)."
            )
        if encoder_input_ids is not None:
            kwargs["bridged_embeds"], kwargs["bridged_mask"] = self.encode(
                encoder_input_ids, encoder_attention_mask
            )
        elif kwargs.get("bridged_embeds") is None:
            raise ValueError(
                "generate needs encoder_input_ids (pass all outputs of the LangBridgeProcessor)."
            )
        config = kwargs.get("generation_config") or self.generation_config
        if (
            kwargs.get("cache") is None
            and kwargs.get("use_cache", config.use_cache) is not False
            and kwargs.get("cache_implementation", config.cache_implementation) is None
            and supports_continuous_batching(self.lm)
        ):
            # The default dynamic cache, written in place instead of re-concatenated at every step.
            kwargs["cache"] = growing_cache()
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    # ---------------------------------------------------------------------------------------------------------
    # Introspection
    def trainable_parameters_summary(self) -> str:
        rows = []
        for name, module in (("encoder", self.encoder), ("bridge", self.bridge), ("lm", self.lm)):
            total = sum(p.numel() for p in module.parameters())
            trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
            rows.append((name, total, trainable))
        total = sum(r[1] for r in rows)
        trainable = sum(r[2] for r in rows)
        lines = [f"{'part':<8} {'parameters':>14} {'trainable':>14}"]
        lines += [f"{n:<8} {t:>14,} {tr:>14,}" for n, t, tr in rows]
        lines.append(
            f"{'total':<8} {total:>14,} {trainable:>14,}  ({100 * trainable / max(total, 1):.2f}% trainable)"
        )
        return "\n".join(lines)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained part: the bridge (incl. enc_eos) and any trainable encoder weights."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        state = self.state_dict()
        keys = {k for k in state if k.startswith("bridge.")} | {
            k for k in trainable if k.startswith("encoder.")
        }
        return {k: state[k].detach().contiguous().cpu() for k in sorted(keys)}

    # ---------------------------------------------------------------------------------------------------------
    # Checkpoints (formats in langbridge.checkpoint)
    def save_pretrained(
        self, save_directory: str | os.PathLike, adapter_only: bool = False, **kwargs: Any
    ) -> None:
        """Save config, generation config and safetensors weights: the whole model, or (`adapter_only=True`) only
        the trained weights plus where the base encoder and LM come from. Files appear atomically."""
        full = super().save_pretrained
        save_checkpoint(self, save_directory, adapter_only, lambda tmp: full(tmp, **kwargs))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *args: Any,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> LangBridgeModel:
        """Load a full or adapter checkpoint. Adapter checkpoints load their base encoder and LM from the recorded
        locations; override them with `encoder=` / `lm=` (paths, hub ids or models)."""
        return load_checkpoint(
            cls,
            pretrained_model_name_or_path,
            super().from_pretrained,
            *args,
            allow_pickle=allow_pickle,
            **kwargs,
        )

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor], source: str = "adapter") -> None:
        own = self.state_dict()
        unknown = sorted(k for k in state if k not in own)
        if unknown:
            raise ValueError(f"{source} has weights this model does not have: {unknown[:5]}")
        bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            k, got, want = bad[0]
            raise ValueError(
                f"{source}: weight {k} has shape {got} but the model expects {want} (wrong base model?)."
            )
        missing = sorted(k for k in own if k.startswith("bridge.") and k not in state)
        if missing:
            raise ValueError(f"{source} lacks bridge weights {missing}; the file is incomplete.")
        self.load_state_dict(state, strict=False)


# LM classes whose forward computes logits as exactly `get_output_embeddings()(last hidden state)` and the loss as
# transformers' causal-LM cross-entropy (checked in transformers 5.24); the fused target loss reproduces exactly that.
# Not here: heads that scale or soft-cap their logits (Granite, Cohere, Gemma 2/3), routers with auxiliary losses.
PLAIN_HEAD_MODEL_TYPES = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gpt2",
        "phi",
        "phi3",
        "gemma",
        "gpt_neox",
        "opt",
        "bloom",
        "starcoder2",
        "olmo2",
        "smollm3",
    }
)


def _has_plain_head(lm: PreTrainedModel) -> bool:
    head = lm.get_output_embeddings()
    return (
        lm.config.model_type in PLAIN_HEAD_MODEL_TYPES
        and isinstance(head, torch.nn.Linear)
        and head.bias is None
        and lm.base_model is not lm
    )
