"""Tiny random models and tokenizers, built in-process so the suite runs offline in seconds.

Session fixtures save each tiny model with its tokenizer to a directory, so tests exercise the same
path/`from_pretrained` code that users hit with real checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MT5Config,
    MT5EncoderModel,
    PreTrainedTokenizerFast,
)

SHARED = Path(os.environ.get("LANGBRIDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SHARED_DATA = SHARED / "data"

CORPUS = [
    "What is 2 plus 3? The answer is 5.",
    "Janet has 16 eggs and sells 3 of them every day at the market.",
    "Swali: Janet ana mayai 16. Anauza mayai 3 kila siku sokoni.",
    "জ্যানেটের হাঁসগুলি প্রতিদিন ১৬টি করে ডিম পাড়ে।",
    "ジャネットのアヒルは1日に16個の卵を産みます。",
    "珍妮的鸭子每天下16个蛋。她每天早上吃三个。",
    "Les canards de Janet pondent 16 œufs par jour.",
    "Утки Джанет откладывают 16 яиц в день.",
    "เป็ดของเจเน็ตวางไข่วันละ 16 ฟอง",
    "జానెట్ బాతులు రోజుకు 16 గుడ్లు పెడతాయి.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Below is an instruction that describes a task.\n\n### Instruction:\nSolve it.\n\n### Response:",
]


def train_byte_bpe(special_tokens: list[str], vocab_size: int = 320) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tokenizer


def make_bert_tokenizer() -> PreTrainedTokenizerFast:
    tok = train_byte_bpe(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
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
        model_max_length=128,
    )


def make_t5_tokenizer() -> PreTrainedTokenizerFast:
    tok = train_byte_bpe(["<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=128
    )


def make_llama_tokenizer() -> PreTrainedTokenizerFast:
    """Adds BOS like Llama; no pad token (the processor falls back to EOS)."""
    tok = train_byte_bpe(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=256
    )


def make_gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """One special token serving as BOS/EOS and no BOS added, like GPT-2."""
    tok = train_byte_bpe(["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=256,
    )


def _save(model, tokenizer, path: Path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Directories holding tiny random models with their tokenizers: bert, mt5 (encoders), llama, gpt2 (LMs)."""
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    bert_tok, t5_tok, llama_tok, gpt2_tok = (
        make_bert_tokenizer(),
        make_t5_tokenizer(),
        make_llama_tokenizer(),
        make_gpt2_tokenizer(),
    )
    bert = BertModel(
        BertConfig(
            vocab_size=len(bert_tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=160,
            pad_token_id=0,
        ),
        add_pooling_layer=False,
    )
    mt5 = MT5EncoderModel(
        MT5Config(
            vocab_size=len(t5_tok) + 16,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(llama_tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
    )
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(gpt2_tok),
            n_embd=48,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    return {
        "bert": _save(bert, bert_tok, root / "bert"),
        "mt5": _save(mt5, t5_tok, root / "mt5"),
        "llama": _save(llama, llama_tok, root / "llama"),
        "gpt2": _save(gpt2, gpt2_tok, root / "gpt2"),
    }


@pytest.fixture()
def tiny_langbridge(tiny_dirs):
    """Factory: `tiny_langbridge(encoder="bert", lm="llama", **kw) -> (model, processor)` in eval mode."""
    from langbridge import LangBridgeModel, LangBridgeProcessor

    def build(encoder: str = "bert", lm: str = "llama", processor_kwargs: dict | None = None, **model_kwargs):
        torch.manual_seed(0)
        model = LangBridgeModel.from_encoder_and_lm(tiny_dirs[encoder], tiny_dirs[lm], **model_kwargs).eval()
        processor = LangBridgeProcessor.from_encoder_and_lm(
            tiny_dirs[encoder], tiny_dirs[lm], **(processor_kwargs or {})
        )
        return model, processor

    return build


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip with the reason when this checkout has no shared data."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"needs shared data at {path} (CI provides ../shared; set LANGBRIDGE_SHARED to point elsewhere)"
        )
    return path


@pytest.fixture
def listening_server():
    """A non-blocking 127.0.0.1 listener: sandboxed programs must never reach it."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def assert_no_connection(server) -> None:
    """Nothing connected to `server` (accept on the non-blocking listener finds no pending connection)."""
    with pytest.raises(BlockingIOError):
        server.accept()[0].close()
