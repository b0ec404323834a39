"""Analyses: representation metrics, pooled-representation extraction, answer-language identification, CLIs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from langbridge.analysis import cli as analysis_cli
from langbridge.analysis.languages import resolve_language
from langbridge.analysis.output_language import (
    OutputLanguageIdentifier,
    PredictionRecord,
    analyze_output_language,
    clean_for_identification,
    read_predictions,
    require_lingua,
)
from langbridge.analysis.representations import (
    analyze_representations,
    langbridge_representations,
    language_silhouette,
    lm_representations,
    load_flores,
    pca_2d,
    retrieval_accuracy,
)

SHARED_FLORES = Path(
    os.environ.get("LANGBRIDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared")
)
SHARED_FLORES = SHARED_FLORES / "data" / "flores200"

PARALLEL = {
    "eng_Latn": [
        "The cat sleeps on the warm roof.",
        "Janet sells eggs at the market every day.",
        "Two plus three is five.",
        "The river flows to the sea.",
        "We visited the old museum yesterday.",
        "Children play football in the park.",
    ],
    "swh_Latn": [
        "Paka analala juu ya paa lenye joto.",
        "Janet anauza mayai sokoni kila siku.",
        "Mbili jumlisha tatu ni tano.",
        "Mto unatiririka hadi baharini.",
        "Tulitembelea makumbusho ya zamani jana.",
        "Watoto wanacheza mpira bustanini.",
    ],
    "zho_Hans": [
        "猫在温暖的屋顶上睡觉。",
        "珍妮每天在市场上卖鸡蛋。",
        "二加三等于五。",
        "河水流向大海。",
        "我们昨天参观了旧博物馆。",
        "孩子们在公园里踢足球。",
    ],
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langbridge")
    analysis_cli.add_parsers(parser.add_subparsers(dest="command"))
    return parser


def _run_cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture()
def flores_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "flores200" / "devtest"
    root.mkdir(parents=True)
    for name, lines in PARALLEL.items():
        (root / f"{name}.devtest").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "data"


# ------------------------------------------------------------------------------------------------------------
# Metrics


def test_retrieval_is_perfect_for_identical_copies() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16))
    result = retrieval_accuracy({"eng": base, "swh": base.copy(), "tel": base.copy()}, pivot="eng")
    assert set(result["per_language"]) == {"swh", "tel"}
    for scores in result["per_language"].values():
        assert scores == {"to_pivot": 1.0, "from_pivot": 1.0, "mean": 1.0}
    assert result["average"] == 1.0
    assert result["chance"] == pytest.approx(1 / 50)


def test_retrieval_is_near_chance_for_unrelated_sentences() -> None:
    rng = np.random.default_rng(1)
    reps = {lang: rng.normal(size=(300, 64)) for lang in ("eng", "swh", "zho")}
    result = retrieval_accuracy(reps)
    # Chance is 1/300; a few lucky hits are fine, systematic matching is not.
    assert result["average"] < 0.03


def test_retrieval_finds_noisy_translations_and_not_shuffled_ones() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(100, 32))
    noisy = base + 0.3 * rng.normal(size=base.shape)
    assert retrieval_accuracy({"eng": base, "deu": noisy})["average"] > 0.95
    shuffled = noisy[rng.permutation(100)]
    assert retrieval_accuracy({"eng": base, "deu": shuffled})["average"] < 0.1


def test_metrics_reject_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="same shape"):
        retrieval_accuracy({"eng": np.zeros((4, 3)), "swh": np.zeros((5, 3))})
    with pytest.raises(ValueError, match="Pivot language 'eng'"):
        retrieval_accuracy({"swh": np.ones((4, 3)), "tel": np.ones((4, 3))})
    with pytest.raises(ValueError, match="at least two languages"):
        language_silhouette({"eng": np.ones((4, 3))})


def test_silhouette_separates_clustered_languages_from_shared_space() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 8))
    clustered = {lang: base * 0.1 + 10 * rng.normal(size=(1, 8)) for lang in ("eng", "swh", "tel")}
    agnostic = {lang: base + 0.01 * rng.normal(size=base.shape) for lang in ("eng", "swh", "tel")}
    assert language_silhouette(clustered) > 0.8
    assert language_silhouette(agnostic) < 0.05


def test_pca_2d_shapes() -> None:
    rng = np.random.default_rng(4)
    reps = {lang: rng.normal(size=(20, 10)) for lang in ("eng", "swh", "tel")}
    coords, labels, evr = pca_2d(reps)
    assert coords.shape == (60, 2)
    assert list(labels[:20]) == ["eng"] * 20 and list(labels[-20:]) == ["tel"] * 20
    assert evr.shape == (2,) and 0 < evr.sum() <= 1


# ------------------------------------------------------------------------------------------------------------
# Extraction with tiny random models


@pytest.mark.parametrize("encoder", ["bert", "mt5"])
def test_langbridge_pooling_is_batch_invariant_and_covers_soft_positions(
    tiny_langbridge, encoder: str
) -> None:
    model, processor = tiny_langbridge(encoder=encoder)
    texts = PARALLEL["eng_Latn"][:4] + PARALLEL["zho_Hans"][:2]
    batched = langbridge_representations(model, processor, texts, batch_size=4, progress=False)
    single = langbridge_representations(model, processor, texts, batch_size=1, progress=False)
    assert batched.shape == (len(texts), model.lm.config.hidden_size)
    np.testing.assert_allclose(batched, single, atol=1e-5)

    # By hand for one sentence: mean of the LM's last hidden state over the encoder-token slots + enc_eos.
    batch = processor([texts[1]], lm_prompts=[""], padding_side="right")
    n_soft = int(batch["encoder_attention_mask"].sum()) + 1
    with torch.inference_mode():
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1][0]
    start = len(processor._prefix_ids)
    expected = hidden[start : start + n_soft].mean(dim=0).numpy()
    np.testing.assert_allclose(batched[1], expected, atol=1e-5)


def test_lm_pooling_skips_bos_and_padding(tiny_dirs) -> None:
    from transformers import AutoModelForCausalLM

    from langbridge.processing import load_lm_tokenizer

    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    tokenizer = load_lm_tokenizer(tiny_dirs["llama"])
    texts = PARALLEL["swh_Latn"][:5]
    batched = lm_representations(lm, tokenizer, texts, batch_size=5, progress=False)
    single = lm_representations(lm, tokenizer, texts, batch_size=1, progress=False)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tokenizer.bos_token_id
    with torch.inference_mode():
        hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    np.testing.assert_allclose(batched[0], hidden[1:].mean(dim=0).numpy(), atol=1e-5)


def test_analyze_representations_keys(tiny_langbridge) -> None:
    model, processor = tiny_langbridge()
    sentences = {"eng": PARALLEL["eng_Latn"], "swh": PARALLEL["swh_Latn"]}
    results = analyze_representations(
        sentences,
        model=model,
        processor=processor,
        lm=model.lm,
        lm_tokenizer=processor.lm_tokenizer,
        progress=False,
    )
    assert set(results) == {"langbridge", "lm"}
    for res in results.values():
        assert set(res["reps"]) == {"eng", "swh"}
        assert res["reps"]["swh"].shape == (6, model.lm.config.hidden_size)
        assert set(res["metrics"]) == {"retrieval", "silhouette", "hidden_size", "pca_explained_variance"}
        assert res["pca"][0].shape == (12, 2)
    with pytest.raises(ValueError, match="Pivot language 'deu'"):
        analyze_representations(sentences, lm=model.lm, lm_tokenizer=processor.lm_tokenizer, pivot="deu")


# ------------------------------------------------------------------------------------------------------------
# FLORES loading


def test_load_flores_short_and_full_codes(flores_dir: Path) -> None:
    texts = load_flores(["eng", "sw", "zho_Hans"], n=4, data_dir=flores_dir)
    assert list(texts) == ["eng", "swh", "zho"]
    assert texts["swh"][1] == PARALLEL["swh_Latn"][1]
    assert all(len(v) == 4 for v in texts.values())
    with pytest.raises(ValueError, match="--n 6 or fewer"):
        load_flores(["eng", "swh"], n=7, data_dir=flores_dir)
    with pytest.raises(FileNotFoundError, match="tel"):
        load_flores(["eng", "tel"], n=2, data_dir=flores_dir)


def test_load_flores_from_shared_data() -> None:
    if not SHARED_FLORES.exists():
        pytest.skip(f"needs FLORES-200 at {SHARED_FLORES} (set LANGBRIDGE_SHARED)")
    texts = load_flores(
        ["eng", "swh", "tel", "spa", "deu", "ben", "tha", "zho"], n=3, data_dir=SHARED_FLORES.parent
    )
    assert len(texts) == 8 and all(len(v) == 3 for v in texts.values())
    assert texts["eng"][0].startswith('"We now have 4-month-old mice')
    assert texts["swh"][0] != texts["eng"][0]


def test_resolve_language_variants() -> None:
    assert (
        resolve_language("sw").code
        == resolve_language("swh_Latn").code
        == resolve_language("Swahili").code
        == "swh"
    )
    assert resolve_language("zh").flores == "zho_Hans"
    with pytest.raises(ValueError, match="Unknown language code"):
        resolve_language("q9")


# ------------------------------------------------------------------------------------------------------------
# CLI: representations


def test_cli_representations_end_to_end(tiny_langbridge, flores_dir: Path, tmp_path: Path) -> None:
    model, processor = tiny_langbridge()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    out = tmp_path / "rep"
    argv = ["analyze", "representations", str(ckpt), "--languages", "eng,swh,zho", "--n", "5"]
    assert (
        _run_cli(
            argv + ["--data-dir", str(flores_dir), "--output", str(out), "--no-progress", "--save-embeddings"]
        )
        == 0
    )
    report = json.loads((out / "representations.json").read_text())
    assert report["languages"] == ["eng", "swh", "zho"] and report["n"] == 5
    assert set(report["models"]) == {"langbridge", "lm"}
    for metrics in report["models"].values():
        assert set(metrics["retrieval"]["per_language"]) == {"swh", "zho"}
        assert -1 <= metrics["silhouette"] <= 1
        assert metrics["hidden_size"] == model.lm.config.hidden_size
    for name in ("pca.png", "pca.svg", "representations.md"):
        assert (out / name).stat().st_size > 0
    assert (out / "pca.png").read_bytes()[:4] == b"\x89PNG"
    assert "| language silhouette" in (out / "representations.md").read_text()
    emb = np.load(out / "embeddings.npz")
    assert emb["langbridge__swh"].shape == (5, model.lm.config.hidden_size)
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temp files


def test_cli_representations_lm_only_and_errors(tiny_dirs, flores_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lm"
    common = ["--languages", "eng,swh", "--n", "4", "--data-dir", str(flores_dir), "--no-progress"]
    assert (
        _run_cli(
            ["analyze", "representations", tiny_dirs["gpt2"], "--lm-only", "--output", str(out), *common]
        )
        == 0
    )
    report = json.loads((out / "representations.json").read_text())
    assert list(report["models"]) == ["lm"]
    # A plain LM without --lm-only is refused with the fix in the message.
    assert _run_cli(["analyze", "representations", tiny_dirs["gpt2"], "--output", str(out), *common]) == 2
    assert "--lm-only" in capsys.readouterr().err
    assert _run_cli(["analyze", "representations", str(tmp_path / "missing"), "--lm-only", *common]) == 2
    assert "not a directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# Output language


KNOWN = {
    "eng": "The answer is 42 because she bought three apples and two oranges at the market.",
    "swh": "Jibu ni 42 kwa sababu alinunua maapulo matatu na machungwa mawili sokoni.",
    "zho": "答案是42，因为她在市场上买了三个苹果和两个橙子。",
    "deu": "Die Antwort ist 42, weil sie auf dem Markt drei Äpfel und zwei Orangen gekauft hat.",
    "tel": "సమాధానం 42 ఎందుకంటే ఆమె మార్కెట్లో మూడు ఆపిల్స్ మరియు రెండు నారింజలు కొన్నది.",
    "tha": "คำตอบคือ 42 เพราะเธอซื้อแอปเปิ้ลสามผลและส้มสองผลที่ตลาด",
}


def test_identifier_labels_known_sentences() -> None:
    identifier = OutputLanguageIdentifier(list(KNOWN) + ["spa", "ben"])
    for code, text in KNOWN.items():
        assert identifier.identify(text).language == code, text
    assert identifier.identify("x = 42 + 17 * 3").language is None
    assert identifier.identify("Yes").language is None  # too few letters


def test_cleaning_removes_numbers_math_and_code() -> None:
    cleaned = clean_for_identification(
        "Jibu ni 18. ```python\nx_1 = 5\n``` $x^2 + 3 = 7$ \\frac see https://a.b/c"
    )
    assert "18" not in cleaned and "x_1" not in cleaned and "frac" not in cleaned and "https" not in cleaned
    assert cleaned.startswith("Jibu ni")
    # Unsegmented scripts keep the words next to a number.
    assert clean_for_identification("答案是42。").startswith("答案是")


def _records(rows: list[tuple[str, str, str]]) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            task=t, language=resolve_language(lang), raw_language=lang, output=o, id=str(i), source="x"
        )
        for i, (t, lang, o) in enumerate(rows)
    ]


def test_output_language_shares_and_examples() -> None:
    rows = [
        ("mgsm", "sw", KNOWN["eng"]),
        ("mgsm", "sw", KNOWN["eng"]),
        ("mgsm", "sw", KNOWN["swh"]),
        ("mgsm", "sw", "42"),
        ("mgsm", "zh", KNOWN["zho"]),
        ("mgsm", "zh", KNOWN["swh"]),
        ("mgsm", "en", KNOWN["eng"]),
        ("xcopa", "sw", KNOWN["swh"]),
    ]
    report, labels = analyze_output_language(_records(rows), progress=False)
    assert report["identifier"]["candidate_languages"] == ["eng", "swh", "zho"]
    swh = report["by_task"]["mgsm"]["swh"]
    assert swh["n"] == 4
    assert swh["counts"] == {"input_language": 1, "english": 2, "other": 0, "undetermined": 1}
    assert swh["shares"]["english"] == pytest.approx(0.5)
    assert [e["detected"] for e in swh["examples"]["english"]] == ["eng", "eng"]
    zho = report["by_task"]["mgsm"]["zho"]
    assert zho["counts"]["other"] == 1 and zho["other_languages"] == {"swh": 1}
    assert report["by_task"]["mgsm"]["eng"]["counts"]["input_language"] == 1  # English to English is "input"
    assert list(report["by_task"]["mgsm"]) == ["eng", "swh", "zho"]
    assert report["overall"]["swh"]["n"] == 5
    assert len(labels) == len(rows) and labels[3]["category"] == "undetermined"


def test_read_predictions_is_tolerant_and_errors_clearly(tmp_path: Path) -> None:
    path = tmp_path / "mgsm_predictions.jsonl"
    rows = [
        {"task": "mgsm", "language": "swh", "output": "Jibu ni 5", "id": 1},
        {"task": "mgsm", "lang": "bn", "raw_output": "The answer is 5", "id": 2},
        {"lang": "te", "prediction": "5", "id": 3},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    records = read_predictions([tmp_path])
    assert [r.language.code for r in records] == ["swh", "ben", "tel"]
    assert [r.output for r in records] == ["Jibu ni 5", "The answer is 5", "5"]
    assert records[2].task == "mgsm_predictions"  # file stem when the record has no task
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "mgsm", "id": 1, "output": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: record lacks a language key"):
        read_predictions([bad])
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_predictions([bad])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_predictions([tmp_path / "nope.jsonl"])


def test_read_predictions_skips_log_likelihood_rows(tmp_path: Path) -> None:
    # XCOPA rows hold the choices' log-likelihoods, not text: they are skipped, and a file of only those says so.
    xcopa = {"task": "xcopa", "language": "sw", "output": [-4.2, -3.1], "id": "test-0"}
    mgsm = {"task": "mgsm", "language": "sw", "output": "Jibu ni 5", "id": "0"}
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(xcopa) + "\n" + json.dumps(mgsm) + "\n", encoding="utf-8")
    assert [r.task for r in read_predictions([path])] == ["mgsm"]
    path.write_text(json.dumps(xcopa) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="only log-likelihood tasks"):
        read_predictions([path])


def test_missing_lingua_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "lingua", None)
    with pytest.raises(ImportError, match=r"pip install lingua-language-detector==2\.1\.1"):
        require_lingua()


def test_cli_output_language_end_to_end(tmp_path: Path) -> None:
    preds = tmp_path / "eval" / "mgsm.predictions.jsonl"
    preds.parent.mkdir()
    rows = [
        {"task": "mgsm", "language": lang, "output": KNOWN[out], "id": i}
        for i, (lang, out) in enumerate(
            [("swh", "eng"), ("swh", "swh"), ("tel", "eng"), ("tel", "tel"), ("eng", "eng")]
        )
    ]
    preds.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "ol"
    assert _run_cli(["analyze", "output-language", str(preds), "--output", str(out), "--no-progress"]) == 0
    report = json.loads((out / "output_language.json").read_text())
    assert report["by_task"]["mgsm"]["tel"]["shares"] == {
        "input_language": 0.5,
        "english": 0.5,
        "other": 0.0,
        "undetermined": 0.0,
    }
    assert report["predictions"] == [str(preds)]
    labels = [json.loads(line) for line in (out / "answer_languages.jsonl").read_text().splitlines()]
    assert [row["detected"] for row in labels] == ["eng", "swh", "eng", "tel", "eng"]
    md = (out / "output_language.md").read_text()
    assert "| tel (Telugu) | 2 | 50.0% | 50.0% |" in md
    for name in ("output_language.png", "output_language.svg"):
        assert (out / name).stat().st_size > 0
