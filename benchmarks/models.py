"""The model pairs the benchmark runs: pretrained where the weights are installed, otherwise (or with
--random-weights) the same architectures built from their configs with random weights.

tiny      2-layer random BERT encoder + 2-layer random Llama, synthetic byte-BPE tokenizers
tiny-mt5  2-layer random mT5 encoder + 2-layer random Llama: the paper pair's code path at toy size
default   e5-small (multilingual-e5-small, BERT) + smollm2-135m-instruct (Llama), the embedded default pair
llama-1b  e5-small-class encoder + a 1B-class Llama (hidden 2048, 16 layers, GQA 32/8), random weights
paper     mT5-XL encoder + a 7B Llama (configs/model_configs), random weights: the paper's 9B scale

Tokenizers come from the installed pretrained pair, else from `<assets>/tokenizers/<alias>` (see
benchmarks/prepare_gpu_assets.sh), else a byte-level BPE trained here on the benchmark text (same special tokens).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedTokenizerFast

from langbridge import LangBridgeModel, LangBridgeProcessor
from langbridge.loaders import T5_ENCODER_CLASSES

from .common import REPO

logger = logging.getLogger("benchmarks")

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
PAPER_CONFIG_DIR = REPO / "configs" / "model_configs"
DEFAULT_ASSETS = REPO / ".bench_assets"
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY_ENCODER = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
}
TINY_MT5 = {
    "model_type": "mt5",
    "d_model": 64,
    "d_ff": 128,
    "d_kv": 16,
    "num_heads": 4,
    "num_layers": 2,
    "vocab_size": 250112,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "tie_word_embeddings": False,
}
TINY_LM = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}


@dataclass(frozen=True)
class PairSpec:
    name: str
    encoder_config: dict[str, Any] | Path
    lm_config: dict[str, Any] | Path
    encoder_alias: str | None = None  # langbridge.pretrained alias (weights and tokenizer)
    lm_alias: str | None = None
    pretrained: bool = False  # whether real weights exist for this pair
    synthetic_vocab: int = 4000


SPECS: dict[str, PairSpec] = {
    "tiny": PairSpec("tiny", TINY_ENCODER, TINY_LM, synthetic_vocab=1000),
    # The paper pair's code path (mT5 encoder, XLM-R or synthetic encoder tokenizer, synthetic LM tokenizer) at
    # tiny size, for testing benchmarks/gpu_check.sh on a CPU.
    "tiny-mt5": PairSpec("tiny-mt5", TINY_MT5, TINY_LM, encoder_alias="e5-small", synthetic_vocab=1000),
    "default": PairSpec(
        "default",
        CONFIG_DIR / "e5-small.json",
        CONFIG_DIR / "smollm2-135m-instruct.json",
        encoder_alias="e5-small",
        lm_alias="smollm2-135m-instruct",
        pretrained=True,
    ),
    "llama-1b": PairSpec(
        "llama-1b",
        CONFIG_DIR / "e5-small.json",
        CONFIG_DIR / "llama-1b.json",
        encoder_alias="e5-small",
        lm_alias="smollm2-135m-instruct",
    ),
    "paper": PairSpec(
        "paper",
        PAPER_CONFIG_DIR / "mt5-xl.json",
        PAPER_CONFIG_DIR / "metamath-7b.json",
        encoder_alias="e5-small",  # XLM-R vocabulary (250k) fits mT5's 250k embedding matrix
        synthetic_vocab=8000,
    ),
}


@dataclass
class Pair:
    name: str
    model: LangBridgeModel
    processor: LangBridgeProcessor
    weights: str  # "pretrained" or "random"
    tokenizers: str  # where the tokenizers came from


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers
def train_bpe(texts: list[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def synthetic_encoder_tokenizer(texts: list[str], vocab_size: int, t5_style: bool) -> PreTrainedTokenizerFast:
    if t5_style:
        tok = train_bpe(texts, vocab_size, ["<pad>", "</s>", "<unk>"])
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="<pad>",
            eos_token="</s>",
            unk_token="<unk>",
            model_max_length=4096,
        )
    tok = train_bpe(texts, vocab_size, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=4096,
    )


def synthetic_lm_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """ChatML special tokens like SmolLM2-Instruct, so the default prompt layout applies unchanged."""
    tok = train_bpe(texts, vocab_size, CHATML_SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=8192,
    )


def _pretrained_dir(alias: str | None) -> str | None:
    """The converted pretrained directory when the weight packages are installed; None otherwise."""
    if alias is None:
        return None
    try:
        from langbridge.pretrained import resolve_pretrained

        return resolve_pretrained(alias)
    except Exception as err:  # missing packages, no converter dependency, ...: fall back to random weights
        logger.info("pretrained %s unavailable (%s)", alias, err)
        return None


def _tokenizer_dir(alias: str | None, assets: Path | None) -> str | None:
    if alias is None:
        return None
    if assets is not None and (assets / "tokenizers" / alias / "tokenizer.json").is_file():
        return str(assets / "tokenizers" / alias)
    return _pretrained_dir(alias)


def _fitting_tokenizer(directory: str | None, vocab_size: int) -> Any:
    if directory is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    return tokenizer if len(tokenizer) <= vocab_size else None


def _load_config(source: dict[str, Any] | Path) -> Any:
    data = dict(source) if isinstance(source, dict) else json.loads(Path(source).read_text())
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


# ----------------------------------------------------------------------------------------------------------------
def build_pair(
    name: str,
    *,
    texts: list[str],
    random_weights: bool,
    device: torch.device,
    dtype: torch.dtype,
    processor_kwargs: dict[str, Any],
    assets: Path | None = DEFAULT_ASSETS,
    seed: int = 0,
) -> Pair:
    """A LangBridgeModel (frozen encoder and LM in `dtype`, fp32 bridge, on `device`) and its processor."""
    if name not in SPECS:
        raise ValueError(f"Unknown model pair {name!r}; choose from {', '.join(SPECS)}.")
    spec = SPECS[name]
    torch.manual_seed(seed)
    enc_dir = lm_dir = None
    if spec.pretrained and not random_weights:
        enc_dir, lm_dir = _pretrained_dir(spec.encoder_alias), _pretrained_dir(spec.lm_alias)
        if enc_dir is None or lm_dir is None:
            raise ValueError(
                f"The pretrained {name} pair is not installed (see `langbridge prepare-models`); "
                "pass --random-weights to benchmark the same architectures with random weights."
            )
    enc_config, lm_config = _load_config(spec.encoder_config), _load_config(spec.lm_config)
    t5 = enc_config.model_type in T5_ENCODER_CLASSES

    # Tokenizers: real ones when their vocabulary fits the model, else trained on the benchmark text.
    sources = []
    enc_tok = _fitting_tokenizer(enc_dir or _tokenizer_dir(spec.encoder_alias, assets), enc_config.vocab_size)
    lm_tok = _fitting_tokenizer(lm_dir or _tokenizer_dir(spec.lm_alias, assets), lm_config.vocab_size)
    if enc_tok is None:
        enc_tok = synthetic_encoder_tokenizer(texts, min(spec.synthetic_vocab, enc_config.vocab_size), t5)
        sources.append(f"encoder: synthetic BPE ({len(enc_tok)})")
    else:
        sources.append(f"encoder: {Path(enc_tok.name_or_path).name}")
    if lm_tok is None:
        lm_tok = synthetic_lm_tokenizer(texts, min(spec.synthetic_vocab, lm_config.vocab_size))
        sources.append(f"lm: synthetic BPE ({len(lm_tok)})")
    else:
        sources.append(f"lm: {Path(lm_tok.name_or_path).name}")
    if name == "tiny":
        enc_config.vocab_size = len(enc_tok)
    if name in ("tiny", "tiny-mt5"):
        lm_config.vocab_size = len(lm_tok)
    for config in (enc_config, lm_config):
        config._attn_implementation = "sdpa"

    if enc_dir is not None and lm_dir is not None:
        model = LangBridgeModel.from_encoder_and_lm(enc_dir, lm_dir, bridge="linear", dtype=dtype)
        processor = LangBridgeProcessor(
            enc_tok, lm_tok, **{**processor_kwargs, "soft_token_id": model.config.soft_token_id}
        )
        weights = "pretrained"
    else:
        with torch.device(device):
            if t5:
                encoder = T5_ENCODER_CLASSES[enc_config.model_type](enc_config).to(dtype)
            else:
                encoder = AutoModel.from_config(enc_config, add_pooling_layer=False, dtype=dtype)
            lm = AutoModelForCausalLM.from_config(lm_config, dtype=dtype)
        processor = LangBridgeProcessor(enc_tok, lm_tok, **processor_kwargs)
        model = LangBridgeModel.from_encoder_and_lm(
            encoder, lm, bridge="linear", soft_token_id=processor.soft_token_id
        )
        weights = "random"
    model.to(device)
    # The recipe keeps trained weights in fp32 whatever the frozen weights are held in.
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    model.eval()
    return Pair(name, model, processor, weights, "; ".join(sources))


def fp32_copy(model: LangBridgeModel) -> LangBridgeModel:
    """The reference runs in full precision; on CPU it shares the (already fp32) model."""
    if all(p.dtype == torch.float32 for p in model.parameters()):
        return model
    return copy.deepcopy(model).float()
