"""Training data: templates, readers for each format, the two modes' examples, label masking, the unlabeled
split, and deterministic length-grouped batching (map-style and streaming)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from langbridge import LangBridgeProcessor
from langbridge.training.batching import (
    Collator,
    EpochBatchSampler,
    StreamingBatches,
    batches_per_epoch,
    eval_batches,
    group_batches,
)
from langbridge.training.config import DataConfig, DataSource, config_from_dict
from langbridge.training.data import (
    DocumentSplitter,
    Example,
    LabeledDataset,
    build_data,
    labeled_example,
    token_lengths,
)
from langbridge.training.sources import DataError, iter_records
from langbridge.training.templates import ALPACA_PREAMBLE, TEMPLATES, get_template

ROWS = [
    {"instruction": "What is 2 plus 3?", "input": "", "output": "The answer is 5."},
    {"instruction": "Add the numbers.", "input": "16 and 3", "output": "19"},
    {"instruction": "Janet has 16 eggs.", "input": None, "output": "She sells 3 of them."},
]


@pytest.fixture(scope="module")
def processor(tiny_dirs) -> LangBridgeProcessor:
    return LangBridgeProcessor.from_encoder_and_lm(
        tiny_dirs["bert"], tiny_dirs["llama"], max_encoder_length=64, max_lm_length=48
    )


def source(**kw) -> DataSource:
    return DataSource(**kw)


# ----------------------------------------------------------------------------- templates


def test_named_templates_split_the_prompt_between_encoder_and_lm():
    assert set(TEMPLATES) == {"plain", "metamath", "alpaca", "chatml", "orca2"}
    meta = get_template("metamath")
    assert meta.encoder_template.format(text="Q?") == ALPACA_PREAMBLE + "### Instruction:\nQ?\n\n"
    assert meta.lm_prompt == "### Response:" and meta.lm_prefix == ""
    for name in ("chatml", "orca2"):
        t = get_template(name)
        assert (t.lm_prefix, t.encoder_template, t.lm_prompt) == (
            "<|im_start|>user\n",
            "{text}",
            "<|im_end|>\n<|im_start|>assistant\n",
        )
    plain = get_template("plain")
    assert plain.encoder_template == "{text}" and plain.lm_prompt == ""


def test_input_and_system_fields_are_combined_on_the_encoder_side():
    alpaca, meta = get_template("alpaca"), get_template("metamath")
    assert alpaca.encoder_text("Add.", "16 and 3") == "Add.\n\n### Input:\n16 and 3"
    assert meta.encoder_text("Add.", "16 and 3") == "Add.\n\n16 and 3"
    assert alpaca.encoder_text("  Add.  ", "  ") == "Add."
    assert get_template("orca2").encoder_text("Why?", None, "Be brief.") == "Be brief.\n\nWhy?"


def test_custom_templates_and_overrides():
    custom = get_template("custom", encoder_template="Q: {text}\n", lm_prompt="A:")
    assert (custom.name, custom.encoder_template, custom.lm_prompt) == ("custom", "Q: {text}\n", "A:")
    # Overriding one part of a named template keeps the others.
    tweaked = get_template("chatml", lm_prompt="<|im_end|>\n<|im_start|>assistant\nAnswer: ")
    assert tweaked.lm_prefix == "<|im_start|>user\n" and tweaked.lm_prompt.endswith("Answer: ")
    with pytest.raises(ValueError, match="needs both"):
        get_template("custom", encoder_template="{text}")
    with pytest.raises(ValueError, match=r"must contain '\{text\}'"):
        get_template("plain", encoder_template="no placeholder")
    with pytest.raises(ValueError, match="unknown template 'vicuna'; allowed: plain, metamath"):
        get_template("vicuna")


# ----------------------------------------------------------------------------- readers


def write_all_formats(root: Path) -> dict[str, Path]:
    files = {
        "jsonl": root / "d.jsonl",
        "json": root / "d.json",
        "tsv": root / "d.tsv",
        "gz": root / "d.jsonl.gz",
    }
    files["jsonl"].write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    files["json"].write_text(json.dumps(ROWS), encoding="utf-8")
    tsv = ["instruction\tinput\toutput"] + [
        f"{r['instruction']}\t{r['input'] or ''}\t{r['output']}" for r in ROWS
    ]
    files["tsv"].write_text("\n".join(tsv) + "\n", encoding="utf-8")
    with gzip.open(files["gz"], "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in ROWS))
    return files


@pytest.mark.parametrize("fmt", ["jsonl", "json", "tsv", "gz"])
def test_labeled_readers_give_the_same_rows(tmp_path, fmt):
    path = write_all_formats(tmp_path)[fmt]
    rows = list(iter_records(source(path=str(path)), None))
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS]
    assert [r["output"] for r in rows] == [r["output"] for r in ROWS]
    limited = list(iter_records(source(path=str(path), max_examples=2), None))
    assert len(limited) == 2


def test_json_variants(tmp_path):
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"data": ROWS}))
    assert len(list(iter_records(source(path=str(wrapped)), None))) == 3
    lines = tmp_path / "lines.json"  # JSON lines under a .json name (HumanEval-MT, HF exports)
    lines.write_text("\n".join(json.dumps(r) for r in ROWS))
    assert len(list(iter_records(source(path=str(lines)), None))) == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": 1}))
    with pytest.raises(DataError, match="expected a JSON list of objects"):
        list(iter_records(source(path=str(bad)), None))


def test_txt_units(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("first line\nsecond line\n\nthird para line one\nline two\n", encoding="utf-8")
    lines = [r["text"] for r in iter_records(source(path=str(path)), None)]
    assert lines == ["first line", "second line", "third para line one", "line two"]
    paras = [r["text"] for r in iter_records(source(path=str(path), txt_unit="paragraph"), None)]
    assert paras == ["first line\nsecond line", "third para line one\nline two"]
    whole = list(iter_records(source(path=str(path), txt_unit="file", text_field="body"), None))
    assert len(whole) == 1 and whole[0]["body"].startswith("first line")


def test_tsv_without_header_and_bare_quotes(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text('He said "hi" twice\t5\nAnother "quote\t7\n', encoding="utf-8")
    rows = list(iter_records(source(path=str(path), columns=["question", "answer"]), None))
    assert rows == [
        {"question": 'He said "hi" twice', "answer": "5"},
        {"question": 'Another "quote', "answer": "7"},
    ]
    ragged = tmp_path / "r.tsv"
    ragged.write_text("a\tb\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"r.tsv:2: 3 columns but the header has 2"):
        list(iter_records(source(path=str(ragged)), None))


def test_reader_errors_name_the_file_and_the_fix(tmp_path):
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"a": 1}\n{not json\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: not valid JSON"):
        list(iter_records(source(path=str(broken)), None))
    odd = tmp_path / "data.csv"
    odd.write_text("a,b\n")
    with pytest.raises(DataError, match="set `format:` to one of jsonl, json, txt, tsv"):
        list(iter_records(source(path=str(odd)), None))
    # An explicit format overrides the suffix.
    (tmp_path / "rows.data").write_text(json.dumps(ROWS[0]) + "\n")
    assert len(list(iter_records(source(path=str(tmp_path / "rows.data"), format="jsonl"), None))) == 1
    with pytest.raises(DataError) as err:
        list(iter_records(source(path="nowhere/train.jsonl"), tmp_path))
    assert "not found" in str(err.value) and "data.data_dir" in str(err.value) and "hub:" in str(err.value)


def test_relative_paths_resolve_against_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    write_all_formats(tmp_path / "sub")
    cfg = DataConfig(train=[source(path="sub/d.jsonl")], data_dir=str(tmp_path))
    monkeypatch.chdir("/")
    from langbridge.training.sources import locate, resolve_data_dir

    data_dir = resolve_data_dir(cfg.data_dir)
    assert locate(cfg.train[0], data_dir) == tmp_path / "sub" / "d.jsonl"
    monkeypatch.setenv("LANGBRIDGE_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DataError, match="is not a directory"):
        resolve_data_dir(str(tmp_path / "missing"))


def test_hub_source_is_used_when_the_local_file_is_missing(tmp_path, monkeypatch):
    """The hub path is real code: with `datasets` absent (or offline) the error says what to do."""
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    src = source(path="gsm8k/missing.jsonl", hub="openai/gsm8k", hub_config="main")
    with pytest.raises(DataError, match=r"hub dataset 'openai/gsm8k' needs the `datasets` package"):
        list(iter_records(src, tmp_path))


def test_hub_loading_passes_name_config_split_and_streaming(monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("datasets")

    def load_dataset(name, config, split, data_dir, streaming):
        calls.append((name, config, split, data_dir, streaming))
        return iter([{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}])

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    src = source(hub="openai/gsm8k", hub_config="main", split="train", max_examples=1)
    rows = list(iter_records(src, None, streaming=True))
    assert rows == [{"question": "q1", "answer": "a1"}]
    assert calls == [("openai/gsm8k", "main", "train", None, True)]


def test_shared_english_files_read(tmp_path):
    gsm = require_shared("gsm8k", "train.jsonl")
    row = next(iter_records(source(path=str(gsm)), None))
    assert {"question", "answer"} <= set(row)
    alpaca = require_shared("english_demo", "alpaca_en_demo.json")
    assert len(list(iter_records(source(path=str(alpaca)), None))) == 999
    wiki = require_shared("wikitext2", "valid.txt")
    paras = list(iter_records(source(path=str(wiki), txt_unit="line", max_examples=20), None))
    assert len(paras) == 20 and all(r["text"].strip() for r in paras)


# ----------------------------------------------------------------------------- labeled mode


def test_labeled_examples_use_fields_templates_and_skip_empty_rows():
    tpl = get_template("alpaca")
    src = source(path="x")
    assert labeled_example(ROWS[1], src, tpl, None) == Example(
        "Add the numbers.\n\n### Input:\n16 and 3", "19"
    )
    assert labeled_example({"instruction": " ", "output": "x"}, src, tpl, None) is None
    assert labeled_example({"instruction": "q", "output": ""}, src, tpl, None) is None
    gsm = source(path="x", instruction_field="question", input_field=None, output_field="answer")
    assert labeled_example({"question": "Q", "answer": "A"}, gsm, tpl, "Sys") == Example("Sys\n\nQ", "A")
    with pytest.raises(DataError, match="field 'question' missing.*instruction_field"):
        labeled_example({"instruction": "Q", "output": "A"}, gsm, tpl, None)


def test_labels_cover_only_the_response_and_the_loss_uses_only_them(processor, tiny_langbridge):
    """Labeled mode: instruction -> encoder, response header -> LM, loss on response tokens (+ EOS) only."""
    tpl = get_template("custom", encoder_template="Question: {text}", lm_prompt=" Answer:")
    proc = LangBridgeProcessor(
        processor.encoder_tokenizer,
        processor.lm_tokenizer,
        encoder_template=tpl.encoder_template,
        lm_prompt=tpl.lm_prompt,
        max_encoder_length=64,
        max_lm_length=48,
    )
    examples = [Example("What is 2 plus 3?", " The answer is 5."), Example("Janet has 16 eggs.", " 13")]
    batch = Collator(proc, append_eos=True)(examples)
    tok = proc.lm_tokenizer
    for i, ex in enumerate(examples):
        labels = batch["labels"][i]
        kept = labels[labels != -100].tolist()
        assert kept == tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        # Everything before the target (BOS, soft slots, the response header) and the padding is masked.
        first = int((labels != -100).nonzero()[0])
        prompt_ids = tok(tpl.lm_prompt, add_special_tokens=False)["input_ids"]
        assert batch["input_ids"][i, first - len(prompt_ids) : first].tolist() == prompt_ids
        assert (labels[batch["attention_mask"][i] == 0] == -100).all()
    # The encoder reads the templated instruction.
    enc = proc.encoder_tokenizer.decode(batch["encoder_input_ids"][0], skip_special_tokens=True)
    assert "Question:" in enc and "2 plus 3" in enc

    model, _ = tiny_langbridge("bert", "llama")
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    mask = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert out.loss == pytest.approx(float(manual), rel=1e-5)
    # Changing the instruction or the header changes the loss only through the conditioning, and a different
    # prompt token never becomes a target.
    other = Collator(proc, append_eos=False)(examples)
    assert int((other["labels"] != -100).sum()) == int(mask.sum()) - len(examples)


# ----------------------------------------------------------------------------- unlabeled mode


DOCS = [
    " ".join(f"word{i}_{j}" for j in range(n))
    for i, n in enumerate([400, 120, 60, 300, 25, 200, 90, 500, 150, 75, 33, 250])
]


def test_documents_are_split_at_a_seeded_random_token_count_in_range(processor):
    tok = processor.encoder_tokenizer
    splitter = DocumentSplitter(tok, min_tokens=8, max_tokens=40, max_lm_length=16, seed=3)
    offsets = splitter.split_offsets(DOCS, range(len(DOCS)))
    counts = []
    for doc, offset in zip(DOCS, offsets, strict=True):
        head, tail = doc[:offset], doc[offset:]
        assert head and tail and doc.startswith(head)
        n_head = len(tok(head, add_special_tokens=False)["input_ids"])
        n_doc = len(tok(doc, add_special_tokens=False)["input_ids"])
        keep = min(16, n_doc // 2)
        # Within [min, max], and never so late that the LM has less than min(max_lm_length, half) to learn.
        assert min(8, n_doc - keep) <= n_head <= max(1, min(40, n_doc - keep)) + 1
        counts.append(n_head)
    assert len(set(counts)) > 4  # varied lengths, not one fixed cut
    # Deterministic in (seed, index): the same again, another seed differs, the index not the position counts.
    assert splitter.split_offsets(DOCS, range(len(DOCS))) == offsets
    other = DocumentSplitter(tok, 8, 40, 16, seed=4).split_offsets(DOCS, range(len(DOCS)))
    assert other != offsets
    assert splitter.split_offsets(DOCS[3:5], [3, 4]) == offsets[3:5]
    ex = splitter(DOCS[0], 0)
    assert ex.encoder_text == DOCS[0][: offsets[0]] and DOCS[0][offsets[0] :].startswith(ex.target)
    assert len(ex.target) <= splitter.tail_chars


def test_split_points_cover_the_configured_range(processor):
    tok = processor.encoder_tokenizer
    long_docs = [DOCS[7]] * 200
    splitter = DocumentSplitter(tok, min_tokens=4, max_tokens=64, max_lm_length=16, seed=0)
    counts = [
        len(tok(d[:o], add_special_tokens=False)["input_ids"])
        for d, o in zip(long_docs, splitter.split_offsets(long_docs, range(200)), strict=True)
    ]
    assert min(counts) <= 10 and max(counts) >= 55  # short and long encoder inputs both occur


def test_unlabeled_build_data_gives_continuations(tmp_path, processor):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in DOCS + ["single"]) + "\n")
    cfg = config_from_dict(
        {
            "data": {
                "mode": "unlabeled",
                "train": [{"path": str(path)}],
                "eval_size": 2,
                "min_split_tokens": 4,
                "max_split_tokens": 32,
                "max_encoder_length": 64,
                "max_lm_length": 16,
            }
        }
    ).data
    data = build_data(cfg, processor, seed=1)
    assert data.num_train == len(DOCS) - 2 and len(data.eval_examples) == 2  # "single" cannot be split
    assert not data.append_eos  # a continuation is cut mid-document: no EOS to learn
    batch = Collator(processor, append_eos=data.append_eos)([data.train[i] for i in data.train_indices[:3]])
    assert (batch["labels"] != -100).sum() > 0
    assert (batch["labels"] != -100).sum(1).max() <= processor.max_lm_length


# ----------------------------------------------------------------------------- batching


def lengths_for(n: int, seed: int = 0) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(5, 500, size=n)]


def test_epoch_batches_are_deterministic_complete_and_length_grouped():
    n, bs = 103, 4
    lengths = lengths_for(n)
    indices = list(range(n))

    def batches(seed=7, epoch=0, **kw):
        return list(EpochBatchSampler(indices, lengths, bs, seed, epoch, mega_batch_mult=5, **kw))

    first = batches()
    assert first == batches()  # same (seed, epoch) -> same batches
    assert first != batches(seed=8) and first != batches(epoch=1)
    assert sorted(i for b in first for i in b) == indices  # every example once per epoch
    assert len(first) == batches_per_epoch(n, bs, 1)
    # The longest batch comes first (out-of-memory shows at step 1).
    assert max(lengths[i] for i in first[0]) == max(lengths)

    def padding(bs_list):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in bs_list)

    ungrouped = batches(group_by_length=False)
    assert sorted(i for b in ungrouped for i in b) == indices
    assert padding(first) < 0.5 * padding(ungrouped)
    # Resuming at batch k yields exactly the rest of the epoch.
    assert batches(start=9) == first[9:]


def test_batches_are_grouped_by_tokens_not_characters(processor):
    # Characters misjudge token counts (many LM tokenizers spend a token per digit); grouping must use the
    # token counts the collator pads to.
    examples = [Example("q " * (i % 7 + 1), " ".join(str(d) for d in range(i % 11 + 1))) for i in range(40)]
    lengths = token_lengths(LabeledDataset(examples), processor)
    collator = Collator(processor, append_eos=True)
    for i, ex in enumerate(examples):
        batch = collator([ex])
        assert (
            lengths[i]
            == int(batch["encoder_attention_mask"].sum())
            - _encoder_specials(processor)
            + int((batch["labels"] != -100).sum())
            - 1
        )  # the appended EOS is a target too
    capped = token_lengths(LabeledDataset([Example("word " * 500, "x")]), processor)
    assert capped[0] <= processor.max_encoder_length + processor.max_lm_length


def _encoder_specials(processor) -> int:
    return len(processor.encoder_tokenizer("a")["input_ids"]) - len(
        processor.encoder_tokenizer("a", add_special_tokens=False)["input_ids"]
    )


def test_ranks_get_disjoint_equal_shares_of_the_same_global_order():
    n, bs = 50, 3
    lengths = lengths_for(n, 1)
    single = list(EpochBatchSampler(range(n), lengths, bs, 0, 0))
    r0 = list(EpochBatchSampler(range(n), lengths, bs, 0, 0, rank=0, world_size=2))
    r1 = list(EpochBatchSampler(range(n), lengths, bs, 0, 0, rank=1, world_size=2))
    assert len(r0) == len(r1) == batches_per_epoch(n, bs, 2) == len(single) // 2
    assert r0 == single[0 : 2 * len(r0) : 2] and r1 == single[1 : 2 * len(r1) : 2]
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}


def test_group_batches_without_rng_keeps_the_order():
    assert group_batches(list("abcdefg"), [1] * 7, 3, 6, None) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


def test_streaming_batches_are_deterministic_and_resumable():
    examples = [Example(f"doc {i} " * (1 + i % 13), "t" * (i % 7 + 1)) for i in range(157)]

    def stream():
        return enumerate(examples)

    def run(seed=0, epoch=0, start=0, **kw):
        sb = StreamingBatches(stream, 4, seed, shuffle_buffer=20, mega_batch_mult=3, **kw)
        sb.set_position(epoch, start)
        return list(sb)

    full = run()
    assert full == run() and full != run(seed=1) and full != run(epoch=1)
    seen = Counter(ex for b in full for ex in b)
    assert set(seen) == set(examples) and max(seen.values()) == 1
    assert run(start=5) == full[5:]
    r0, r1 = run(rank=0, world_size=2), run(rank=1, world_size=2)
    assert abs(len(r0) - len(r1)) == 0 and not set(map(id, sum(r0, []))) & set(map(id, sum(r1, [])))
    assert run(rank=1, world_size=2, start=3) == r1[3:]


def test_streaming_build_data_reads_lazily(tmp_path, processor):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS * 5) + "\n")
    cfg = config_from_dict(
        {
            "max_steps": 3,
            "num_epochs": None,
            "data": {"train": [{"path": str(path)}], "streaming": True, "eval_size": 2},
        }
    ).data
    data = build_data(cfg, processor, seed=0)
    assert data.train is None and data.num_train is None
    tpl = get_template("plain")
    everything = [labeled_example(r, cfg.train[0], tpl, None) for r in ROWS * 5]
    # The first eval_size examples are held out; the stream yields the rest, with their global indices.
    assert data.eval_examples == everything[:2]
    assert list(data.stream()) == list(enumerate(everything))[2:]


def test_held_out_split_is_seeded_and_disjoint(tmp_path, processor):
    rows = [{"instruction": f"question number {i}", "output": f"answer {i}"} for i in range(40)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = DataConfig(train=[source(path=str(path))], eval_size=6)
    a, b, c = (build_data(cfg, processor, seed=s) for s in (0, 0, 1))
    assert a.eval_examples == b.eval_examples and a.eval_examples != c.eval_examples
    train_texts = {a.train[i].encoder_text for i in a.train_indices}
    assert len(train_texts) == 34 and not train_texts & {e.encoder_text for e in a.eval_examples}
    with pytest.raises(DataError, match="leaves no training data"):
        build_data(DataConfig(train=[source(path=str(path))], eval_size=40), processor, seed=0)


def test_eval_batches_give_every_rank_the_same_count():
    examples = [Example("x" * i, "y") for i in range(1, 12)]
    per_rank = [eval_batches(examples, 4, r, 2) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 2
    counted = [ex for rank in per_rank for batch, counts in rank if counts for ex in batch]
    assert sorted(counted, key=lambda e: e.length) == sorted(examples, key=lambda e: e.length)
