"""The registered FLORES content tasks: article-level dev/test portions, the prompts each model reads, per-token
losses that pair across models, and chrF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from langbridge.evaluation import CausalLMBackend, LangBridgeBackend, evaluate, get_task, read_predictions
from langbridge.evaluation.data import DataSource
from langbridge.evaluation.registry import BuildOptions
from langbridge.evaluation.requests import PromptStyle
from langbridge.evaluation.tasks.flores import REWRITE_INSTRUCTION, portion_of

ENGLISH = [f"Sentence {i} of article {i // 3} is here." for i in range(30)]
SWAHILI = [f"Sentensi {i} ya makala {i // 3} iko hapa." for i in range(30)]


@pytest.fixture()
def flores_root(tmp_path: Path) -> Path:
    folder = tmp_path / "flores200" / "devtest"
    folder.mkdir(parents=True)
    (folder / "eng_Latn.devtest").write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    (folder / "swh_Latn.devtest").write_text("\n".join(SWAHILI) + "\n", encoding="utf-8")
    rows = ["URL\tdomain\ttopic\thas_image\thas_hyperlink"] + [
        f"https://x.org/a{i // 3}\twiki\tt\t0\t0" for i in range(30)
    ]
    (folder / "metadata_devtest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path


def test_portions_split_whole_articles(flores_root: Path) -> None:
    source = DataSource(root=flores_root)
    task = get_task("flores-x2en")
    dev, test = task.load(source, "swh", "dev"), task.load(source, "swh", "test")
    assert len(dev) + len(test) == 30 and dev and test
    dev_articles = {int(e.id.split("-")[1]) // 3 for e in dev}
    assert dev_articles.isdisjoint({int(e.id.split("-")[1]) // 3 for e in test})
    assert all(portion_of(f"https://x.org/a{a}") == "dev" for a in dev_articles)
    first = dev[0]
    i = int(first.id.split("-")[1])
    assert first.input["text"] == SWAHILI[i] and first.gold == ENGLISH[i]
    cont = get_task("flores-continuation").load(source, "swh", "test")
    # Pairs stay inside an article: 2 per 3-sentence article.
    assert all(int(e.id.split("-")[1]) % 3 != 2 for e in cont)
    assert all(e.gold == ENGLISH[int(e.id.split("-")[1]) + 1] for e in cont)
    with pytest.raises(ValueError, match="splits dev and test"):
        task.load(source, "swh", "validation")


def test_prompts_match_between_models(flores_root: Path) -> None:
    source = DataSource(root=flores_root)
    example = get_task("flores-x2en").load(source, "swh", "test")[0]
    style = PromptStyle(instruct=True, chat=lambda user: f"<u>{user}</u><a>")
    (request,) = get_task("flores-x2en").build(example, style, BuildOptions(), None)
    assert request.context == example.input["text"] and request.lm_instruction == REWRITE_INSTRUCTION
    assert request.full_context == f"<u>{example.input['text']}{REWRITE_INSTRUCTION}</u><a>"
    (cont,) = get_task("flores-continuation").build(example, style, BuildOptions(), None)
    assert cont.lm_prompt == "\n" and cont.full_context == example.input["text"] + "\n"


def test_losses_are_per_token_and_pair_across_models(
    flores_root: Path, tiny_langbridge, tmp_path: Path
) -> None:
    model, processor = tiny_langbridge(processor_kwargs={"lm_prompt": "<p>"})
    lb = LangBridgeBackend(model, processor, batch_size=4, name="lb")
    lm = CausalLMBackend(model.lm, processor.lm_tokenizer, batch_size=4, name="lm")
    for backend in (lb, lm):
        out = tmp_path / backend.name
        res = evaluate(
            backend,
            "flores-x2en",
            languages=["swh"],
            split="test",
            output_dir=out,
            data_dir=flores_root,
            allow_hub=False,
            progress=False,
        )
        rows = read_predictions(out / "predictions" / "flores-x2en.jsonl")
        values = [r["correct"] for r in rows.values()]
        assert all(isinstance(v, float) and v > 0 for v in values)
        for r in rows.values():
            assert r["correct"] == pytest.approx(-r["output"][0]["logprob"] / r["output"][0]["tokens"])
        assert res["tasks"]["flores-x2en"]["scores"]["swh"] == pytest.approx(np.mean(values))
        assert res["tasks"]["flores-x2en"]["metric"] == "nats_per_token"
    # The LangBridge LM read the instruction before its own prompt.
    rows = read_predictions(tmp_path / "lb" / "predictions" / "flores-x2en.jsonl")
    assert all(r["lm_prompt"] == REWRITE_INSTRUCTION + "<p>" for r in rows.values())
    # Both models scored the same English tokens (the target is tokenized alone after a newline-ended prompt).
    lb_tokens = {k: r["output"][0]["tokens"] for k, r in rows.items()}
    lm_rows = read_predictions(tmp_path / "lm" / "predictions" / "flores-x2en.jsonl")
    assert lb_tokens == {k: r["output"][0]["tokens"] for k, r in lm_rows.items()}


def test_chrf_task_generates_one_line(flores_root: Path, tiny_langbridge, tmp_path: Path) -> None:
    model, processor = tiny_langbridge()
    backend = LangBridgeBackend(model, processor, batch_size=4, name="lb")
    res = evaluate(
        backend,
        "flores-x2en-chrf",
        languages=["swh"],
        split="dev",
        limit=3,
        max_new_tokens=6,
        output_dir=tmp_path,
        data_dir=flores_root,
        allow_hub=False,
        progress=False,
    )
    rows = read_predictions(tmp_path / "predictions" / "flores-x2en-chrf.jsonl")
    assert len(rows) == 3 and all(
        0.0 <= r["correct"] <= 100.0 and "\n" not in r["extracted"] for r in rows.values()
    )
    assert res["tasks"]["flores-x2en-chrf[dev]"]["metric"] == "chrf"
    task = get_task("flores-x2en-chrf")
    example = task.load(DataSource(root=flores_root), "swh", "dev")[0]
    assert task.score(example.gold, example) == pytest.approx(100.0)
    assert task.score("", example) == pytest.approx(0.0)


def test_missing_files_name_the_place(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="flores200/devtest/swh_Latn.devtest"):
        get_task("flores-x2en").load(DataSource(root=tmp_path), "swh", "test")
    with pytest.raises(ValueError, match="not one of"):
        get_task("flores-x2en").load(DataSource(root=tmp_path), "xx", "test")
