"""LangBridgeConfig: a composite config holding the encoder and LM configs, like transformers' LLaVA."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# The bridge kinds and the default (the paper's single linear layer): every other module reads them from here.
BRIDGE_TYPES = ("linear", "ffn")
DEFAULT_BRIDGE_TYPE = "linear"
# Truncation lengths of the encoder input and of the LM text tokens. They belong to the processor, which
# truncates; checkpoints keep them in langbridge_processor.json only.
DEFAULT_MAX_ENCODER_LENGTH = 512
DEFAULT_MAX_LM_LENGTH = 1024
MAX_LENGTH_LIMIT = 1_000_000
# Older checkpoints also wrote the lengths into config.json, where they had no effect; they are read, checked
# and dropped.
LEGACY_LENGTH_FIELDS = ("max_encoder_length", "max_lm_length")
# Encoder families we run as an encoder-only stack (T5-style models ship an encoder-decoder by default).
T5_FAMILY = ("t5", "mt5", "umt5")


class LangBridgeConfig(PreTrainedConfig):
    r"""Configuration of a [`LangBridgeModel`].

    Args:
        encoder_config: config of the multilingual encoder (BERT, XLM-R, E5, MiniLM, T5/mT5/UMT5 encoder).
        lm_config: config of the (frozen) causal language model.
        bridge_type: `"linear"` (the paper: one linear layer) or `"ffn"` (two-layer GELU MLP).
        freeze_encoder: keep the encoder frozen (the paper does so for instruction-tuned LMs).
        train_encoder_embeddings: train only the encoder's input embeddings while the encoder is frozen
            (the official code does this after adding whitespace tokens to an mT5 vocabulary).
        encoder_layer: which encoder hidden state the bridge reads when it does not mix them (index into the
            encoder's `hidden_states`: 0 = embeddings, -1 = the last layer, the paper's choice).
        encoder_layer_mix: read every encoder hidden state through a learned softmax-weighted mix (LayAlign).
        bridge_input_norm: parameter-free layer norm of the encoder states before the projection.
        soft_token_norm: rescale each bridged state to this L2 norm (e.g. the LM's mean token-embedding norm);
            None keeps the projection's own scale (the paper).
        soft_token_id: LM vocabulary id of the placeholder slots that receive the bridged states: the id of the
            processor's `soft_token`, stored here once (the processor reads it from the tokenizer).
        encoder_name_or_path / lm_name_or_path: where the base models come from (used by adapter checkpoints).
    """

    model_type = "langbridge"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
        "lm_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    encoder_config: dict | PreTrainedConfig | None = None
    lm_config: dict | PreTrainedConfig | None = None
    bridge_type: str = DEFAULT_BRIDGE_TYPE
    ffn_multiplier: int = 2
    encoder_layer: int = -1
    encoder_layer_mix: bool = False
    bridge_input_norm: bool = False
    soft_token_norm: float | None = None
    freeze_encoder: bool = True
    train_encoder_embeddings: bool = False
    soft_token_id: int = 0
    encoder_name_or_path: str | None = None
    lm_name_or_path: str | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for name in LEGACY_LENGTH_FIELDS:
            if name in kwargs:
                check_length(name, kwargs.pop(name))
        super().__post_init__(**kwargs)
        check_bridge_type(self.bridge_type)
        if not isinstance(self.ffn_multiplier, int) or self.ffn_multiplier < 1:
            raise ValueError(f"ffn_multiplier={self.ffn_multiplier!r} must be a positive integer.")
        states = self.num_encoder_states
        if states and not -states <= self.encoder_layer < states:
            raise ValueError(
                f"encoder_layer={self.encoder_layer} is outside the encoder's {states} hidden states "
                f"(embeddings + layers); use -1 for the last layer or 0..{states - 1}."
            )
        if self.soft_token_norm is not None and not self.soft_token_norm > 0:
            raise ValueError(f"soft_token_norm={self.soft_token_norm!r} must be a positive number or None.")
        vocab = getattr(self.lm_config, "vocab_size", None)
        if vocab is not None and not 0 <= self.soft_token_id < vocab:
            raise ValueError(
                f"soft_token_id={self.soft_token_id} is outside the LM vocabulary [0, {vocab}); "
                "build the config with LangBridgeModel.from_encoder_and_lm or pass a valid LM token id."
            )

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        # Generation utilities (cache construction, tying) look for the text decoder here: that is the LM.
        return self.encoder_config if encoder and not decoder else self.lm_config

    @property
    def encoder_hidden_size(self) -> int:
        return self.encoder_config.hidden_size

    @property
    def num_encoder_states(self) -> int:
        """Hidden states the encoder returns with output_hidden_states: its embeddings plus one per layer."""
        cfg = self.encoder_config
        layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "num_layers", None) or 0
        return int(layers) + 1 if layers else 0

    @property
    def lm_hidden_size(self) -> int:
        return self.lm_config.hidden_size

    @property
    def is_t5_encoder(self) -> bool:
        return self.encoder_config.model_type in T5_FAMILY


def check_bridge_type(bridge_type: str) -> None:
    if bridge_type not in BRIDGE_TYPES:
        raise ValueError(f"bridge_type={bridge_type!r} is not supported; choose one of {BRIDGE_TYPES}.")


def length_error(name: str, value: object) -> str | None:
    """The one validity rule for a truncation length (encoder or LM side): an integer in [1, 1000000]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LENGTH_LIMIT:
        return f"{name}: must be an integer in [1, {MAX_LENGTH_LIMIT}], got {value!r}"
    return None


def check_length(name: str, value: object) -> None:
    message = length_error(name, value)
    if message:
        raise ValueError(message)
