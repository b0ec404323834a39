"""Loading the two base models of a LangBridge model: the multilingual encoder (encoder-only; T5-family models
as their encoder stack) and the causal LM, from a path, hub id, bundled alias or an already-built model."""

from __future__ import annotations

import os
from typing import Any

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    GenerationMixin,
    MT5EncoderModel,
    PreTrainedModel,
    T5EncoderModel,
    UMT5EncoderModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from langbridge.configuration import T5_FAMILY
from langbridge.processing import load_encoder_tokenizer, soft_token_id_for
from langbridge.utils import resolve_model_name

T5_ENCODER_CLASSES = {"t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}


def build_encoder(config: Any) -> PreTrainedModel:
    """An encoder-only model from a config (T5-family configs get their encoder stack only)."""
    if config.model_type in T5_ENCODER_CLASSES:
        return T5_ENCODER_CLASSES[config.model_type](config)
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def load_base_models(
    encoder: str | os.PathLike | PreTrainedModel,
    lm: str | os.PathLike | PreTrainedModel,
    dtype: Any = None,
    allow_pickle: bool = False,
) -> tuple[PreTrainedModel, str | None, PreTrainedModel, str | None]:
    """`(encoder, encoder_source, lm, lm_source)`, with room in a T5-family encoder's embeddings for the
    whitespace tokens the processor adds to its vocabulary."""
    encoder_model, encoder_source = load_encoder(encoder, dtype=dtype, allow_pickle=allow_pickle)
    lm_model, lm_source = load_lm(lm, dtype=dtype, allow_pickle=allow_pickle)
    if encoder_model.config.model_type in T5_FAMILY and encoder_source is not None:
        needed = len(load_encoder_tokenizer(encoder_source))
        if needed > encoder_model.get_input_embeddings().num_embeddings:
            encoder_model.resize_token_embeddings(needed)
    return encoder_model, encoder_source, lm_model, lm_source


def load_encoder(
    encoder: str | os.PathLike | PreTrainedModel, dtype: Any = None, allow_pickle: bool = False
) -> tuple[PreTrainedModel, str | None]:
    if isinstance(encoder, PreTrainedModel):
        model, source = encoder, encoder.config.name_or_path or None
        if model.config.model_type in T5_ENCODER_CLASSES and not isinstance(
            model, tuple(T5_ENCODER_CLASSES.values())
        ):
            encoder_only = T5_ENCODER_CLASSES[model.config.model_type](model.config)
            missing, _ = encoder_only.load_state_dict(model.state_dict(), strict=False)
            if missing:
                raise ValueError(
                    f"Could not take the encoder stack out of {type(model).__name__}: missing {missing[:3]}"
                )
            model = encoder_only.to(next(encoder.parameters()).dtype)
    else:
        source = resolve_model_name(encoder)
        config = _load_config(source, "encoder")
        load_kwargs = {"dtype": dtype, "use_safetensors": None if allow_pickle else True}
        if config.model_type in T5_ENCODER_CLASSES:
            model = T5_ENCODER_CLASSES[config.model_type].from_pretrained(source, **load_kwargs)
        else:
            try:
                model = AutoModel.from_pretrained(source, add_pooling_layer=False, **load_kwargs)
            except TypeError:
                model = AutoModel.from_pretrained(source, **load_kwargs)
    model_type = model.config.model_type
    is_encoder = model_type in T5_ENCODER_CLASSES or model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if not is_encoder or getattr(model.config, "is_decoder", False) or isinstance(model, GenerationMixin):
        raise ValueError(
            f"The encoder must be an encoder model (BERT/XLM-R/E5/MiniLM or a T5/mT5/UMT5 encoder), got "
            f"{type(model).__name__}. Pass the LM as `lm=`."
        )
    return model, source


def load_lm(
    lm: str | os.PathLike | PreTrainedModel, dtype: Any = None, allow_pickle: bool = False
) -> tuple[PreTrainedModel, str | None]:
    if isinstance(lm, PreTrainedModel):
        model, source = lm, lm.config.name_or_path or None
    else:
        source = resolve_model_name(lm)
        config = _load_config(source, "LM")
        if config.is_encoder_decoder or config.model_type in ("bert", "xlm-roberta", "roberta", "distilbert"):
            raise ValueError(
                f"The LM must be a decoder-only causal LM (Llama, Mistral, Qwen2, Gemma, GPT-2, ...), got model_type="
                f"{config.model_type!r} from {source}. Pass the encoder as `encoder=`."
            )
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, use_safetensors=None if allow_pickle else True
        )
    if not isinstance(model, GenerationMixin) or model.get_output_embeddings() is None:
        raise ValueError(f"The LM must be a causal LM with an output head, got {type(model).__name__}.")
    return model, source


def _load_config(source: str, role: str) -> Any:
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise OSError(
            f"Could not load the {role} config from {source!r}: {err}. Pass a local directory with config.json, a "
            "hub id (online), or an alias such as 'e5-small' / 'smollm2-135m-instruct'."
        ) from err


def lm_embedding_norm(lm: PreTrainedModel) -> float:
    """The LM's own scale: the mean L2 norm of its token embeddings (`soft_token_norm="lm"`)."""
    weight = lm.get_input_embeddings().weight
    return round(float(weight.detach().float().norm(dim=-1).mean()), 4)


def default_soft_token_id(lm: PreTrainedModel, source: str | None) -> int:
    """The placeholder id when the model is built without its processor: the processor's default choice for the
    LM's tokenizer; an LM without a tokenizer (built in memory) falls back on its pad id, else 0."""
    if source is not None:
        try:
            return soft_token_id_for(source)
        except (OSError, ValueError):
            pass
    for candidate in (getattr(lm.config, "pad_token_id", None), 0):
        if candidate is not None and candidate != getattr(lm.config, "eos_token_id", None):
            return int(candidate)
    return 0
