"""The demo's statistics, the FLORES continuation score and the --quick pipeline on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import require_shared

from langbridge.experiments.flores import (
    continuation_pairs,
    portion_of,
    read_documents,
    score_langbridge,
    score_lm_text,
    subsample,
)
from langbridge.experiments.stats import paired_bootstrap, paired_bootstrap_mean_over_groups

# ----------------------------------------------------------------------------- paired bootstrap


def test_bootstrap_ci_contains_true_delta_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        # Paired data: a shared per-example difficulty plus a true delta of 0.1 accuracy.
        difficulty = rng.random(400)
        a = (rng.random(400) < np.clip(difficulty + 0.1, 0, 1)).astype(float)
        b = (rng.random(400) < difficulty).astype(float)
        true_delta = np.clip(difficulty + 0.1, 0, 1).mean() - difficulty.mean()
        stat = paired_bootstrap(a, b, n_resamples=500, seed=trial)
        covered += stat["ci_low"] <= true_delta <= stat["ci_high"]
        assert stat["ci_low"] <= stat["delta"] <= stat["ci_high"]
    assert covered >= 34  # nominal 95%: 38 of 40 expected; far fewer would mean a broken interval
    again = paired_bootstrap(a, b, n_resamples=500, seed=trial)
    assert again == stat
    other = paired_bootstrap(a, b, n_resamples=500, seed=trial + 1)
    assert other["ci_low"] != stat["ci_low"]


def test_bootstrap_weighted_ratio_and_errors() -> None:
    nll_a, nll_b, tokens = [2.0, 6.0], [4.0, 8.0], [1, 3]
    stat = paired_bootstrap(nll_a, nll_b, tokens, n_resamples=100)
    assert stat["a"] == pytest.approx(8 / 4) and stat["b"] == pytest.approx(12 / 4)
    assert stat["delta"] == pytest.approx(-1.0)
    identical = paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], n_resamples=50)
    assert identical["delta"] == identical["ci_low"] == identical["ci_high"] == 0.0
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one weight per example"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0], [1.0])
    group = paired_bootstrap_mean_over_groups(
        [([1.0, 1.0], [0.0, 0.0], None), ([0.0, 0.0], [0.0, 0.0], None)]
    )
    assert group["delta"] == pytest.approx(0.5) and group["groups"] == 2


# ----------------------------------------------------------------------------- FLORES documents


def test_flores_pairs_follow_documents_and_portions_are_disjoint(tmp_path: Path) -> None:
    (tmp_path / "metadata_devtest.tsv").write_text(
        "URL\tdomain\n" + "".join(f"{u}\tx\n" for u in ["a", "a", "a", "b", "c", "c"]), encoding="utf-8"
    )
    docs = read_documents(tmp_path)
    pairs = continuation_pairs(docs, "all")
    assert [(p.doc, p.index, p.target_index) for p in pairs] == [("a", 0, 1), ("a", 1, 2), ("c", 4, 5)]
    dev = {p.doc for p in continuation_pairs(docs, "dev")}
    test = {p.doc for p in continuation_pairs(docs, "test")}
    assert not dev & test and dev | test == {"a", "c"}
    assert all(portion_of(d) == "dev" for d in dev)
    assert subsample(pairs, 2, seed=0) == subsample(pairs, 2, seed=0)
    assert len(subsample(pairs, 2, seed=0)) == 2 and subsample(pairs, None, seed=0) == pairs


def test_real_flores_metadata_groups_articles() -> None:
    directory = require_shared("flores200", "devtest")
    docs = read_documents(directory)
    assert len(docs) == 1012
    dev, test = continuation_pairs(docs, "dev"), continuation_pairs(docs, "test")
    assert len(dev) + len(test) == len(continuation_pairs(docs, "all"))
    assert 0.1 < len(dev) / (len(dev) + len(test)) < 0.3


# ----------------------------------------------------------------------------- FLORES scores


class CopyLM(torch.nn.Module):
    """A hand-built induction LM: it predicts the token that followed the previous occurrence of the current
    token in the context (probability 0.9), otherwise uniform. Seeing the target earlier makes it easy."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0, **_: object
    ) -> SimpleNamespace:
        b, t = input_ids.shape
        logits = torch.zeros(b, t, self.vocab)
        for i in range(b):
            row = input_ids[i].tolist()
            real = attention_mask[i].tolist()
            for pos in range(t):
                for prev in range(pos - 1, -1, -1):
                    if real[prev] and row[prev] == row[pos]:
                        logits[i, pos, row[prev + 1]] = math.log(0.9 * self.vocab)
                        break
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def test_lm_text_upper_bound_ordering_on_constructed_case(tiny_dirs: dict[str, str]) -> None:
    from langbridge.processing import load_lm_tokenizer

    tok = load_lm_tokenizer(tiny_dirs["gpt2"])
    lm = CopyLM(len(tok)).eval()
    target = "Janet has 16 eggs and sells 3 of them every day at the market."
    # The "English sentence i" contains the target itself; the "foreign" context does not.
    english, foreign = target, "जानेट బాతులు 1 ฟอง"
    nll, n = score_lm_text(lm, tok, [english, foreign, None], [target] * 3, batch_size=2)
    per_token = nll / n
    assert (n == len(tok(target, add_special_tokens=False)["input_ids"])).all()
    assert per_token[0] < per_token[1] - 1.0  # seeing the English sentence helps a lot
    assert per_token[1] == pytest.approx(per_token[2], abs=1.5)  # an unrelated context ~ no context


def test_lm_text_scores_are_padding_invariant(tiny_dirs: dict[str, str]) -> None:
    from transformers import AutoModelForCausalLM

    from langbridge.processing import load_lm_tokenizer

    tok = load_lm_tokenizer(tiny_dirs["llama"])
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    contexts = ["Swali: Janet ana mayai 16.", "Les canards", None]
    targets = ["She eats three every morning.", "The answer is 5.", "Janet has 16 eggs."]
    batched, n = score_lm_text(lm, tok, contexts, targets, batch_size=3)
    single = [score_lm_text(lm, tok, [c], [t], batch_size=1) for c, t in zip(contexts, targets, strict=True)]
    np.testing.assert_allclose(batched, [s[0][0] for s in single], rtol=1e-4)
    assert list(n) == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in targets]


def test_langbridge_score_masks_all_but_the_target(tiny_langbridge) -> None:
    model, processor = tiny_langbridge("bert", "llama")
    contexts = ["Swali: Janet ana mayai 16.", "珍妮的鸭子每天下16个蛋。", "Les canards"]
    targets = ["She eats three every morning.", "The answer is 5.", "Janet has 16 eggs."]
    nll, n = score_langbridge(model, processor, contexts, targets, batch_size=2)
    assert nll.shape == n.shape == (3,) and (nll > 0).all()
    assert list(n) == [len(processor.lm_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets]
    # Per-example values equal the model's own mean loss on that example alone (which masks prompt/slots).
    for i in range(3):
        batch = processor([contexts[i]], targets=[targets[i]], append_eos=False, padding_side="right")
        with torch.no_grad():
            loss = model(**batch).loss
        assert nll[i] / n[i] == pytest.approx(float(loss), rel=1e-4)


# ----------------------------------------------------------------------------- the --quick pipeline


@pytest.mark.slow
def test_quick_demo_end_to_end_on_tiny_models(tiny_dirs: dict[str, str], tmp_path: Path, capsys) -> None:
    import argparse

    from langbridge.experiments import demo

    require_shared("flores200", "devtest", "metadata_devtest.tsv")
    require_shared("xcopa", "data", "sw")
    require_shared("english_demo", "c4_demo.jsonl")
    parser = argparse.ArgumentParser()
    demo.add_parsers(parser.add_subparsers())
    out = tmp_path / "demo"
    # Unlabeled recipe: with the tiny byte-level tokenizer, the labeled recipe's ChatML strings fill the whole
    # LM text budget and leave no target tokens to learn from.
    args = parser.parse_args(
        [
            "demo",
            "--quick",
            "--recipe",
            "unlabeled",
            "--output",
            str(out),
            "--encoder",
            tiny_dirs["bert"],
            "--lm",
            tiny_dirs["llama"],
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "FLORES-200 continuation" in printed and "XCOPA" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == ["langbridge_seed0", "langbridge_seed1"]
    flores = results["tasks"]["flores"]
    assert set(flores["languages"]) == {"eng", "swh"}
    for row in flores["languages"].values():
        assert len(row["langbridge_per_seed"]) == 2
        ci = row["delta_vs_lm"]
        assert ci["ci_low"] <= ci["delta"] <= ci["ci_high"] and ci["n"] == 6
    assert set(results["tasks"]["xcopa"]["languages"]) == {"sw"}
    assert results["tasks"]["xcopa"]["split"] == "test"
    assert "mgsm" in results["tasks"]
    assert (out / "results.md").read_text().startswith("### FLORES-200")
    for seed in (0, 1):
        assert (out / "train" / f"seed{seed}" / "final" / "config.json").exists()
        metrics = [
            json.loads(x) for x in (out / "train" / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert all(m["target_tokens_per_s"] > 0 and m["loss"] > 0 for m in metrics if m["split"] == "train")
    assert (out / "pca" / "pca.png").exists()

    # A second call resumes from the cached scores and reproduces the report exactly.
    before = (out / "results.md").read_text()
    assert args.func(args) == 0
    assert (out / "results.md").read_text() == before
    # Changing a setting in the same folder is refused instead of mixing runs.
    other = parser.parse_args(["demo", "--quick", "--output", str(out), "--steps", "3"])
    with pytest.raises(ValueError, match="other settings"):
        other.func(other)


def test_results_md_blocks_are_replaced_and_others_kept() -> None:
    from langbridge.experiments.results_doc import fill_markers

    text = "intro\n<!-- demo:main -->\nold table\n<!-- /demo:main -->\nmiddle\n<!-- demo:pca -->\nkeep\n<!-- /demo:pca -->\n"
    filled = fill_markers(text, {"main": "| new | table |", "other": "unused"})
    assert "| new | table |\n<!-- /demo:main -->" in filled and "old table" not in filled
    assert "<!-- demo:pca -->\nkeep\n" in filled and filled.startswith("intro\n") and "middle" in filled
    assert fill_markers(filled, {"main": "| new | table |"}) == filled  # idempotent


def test_comparison_verdicts_follow_the_ci() -> None:
    from langbridge.experiments.results_doc import _verdict

    assert (
        _verdict({"delta": -0.2, "ci_low": -0.3, "ci_high": -0.1}, lower_is_better=True)
        == "LangBridge better"
    )
    assert (
        _verdict({"delta": 0.05, "ci_low": 0.01, "ci_high": 0.09}, lower_is_better=False)
        == "LangBridge better"
    )
    assert (
        _verdict({"delta": 0.05, "ci_low": 0.01, "ci_high": 0.09}, lower_is_better=True) == "LangBridge worse"
    )
    assert _verdict({"delta": 0.01, "ci_low": -0.02, "ci_high": 0.04}, lower_is_better=True) == (
        "no detectable difference"
    )


def test_ablation_figures_are_written(tmp_path: Path) -> None:
    from langbridge.experiments.plots import plot_ablations

    def row(step: int, shift: float) -> dict:
        cell = lambda a, b: {"a": a, "b": b, "delta": a - b, "ci_low": a - b - 0.05, "ci_high": a - b + 0.05}  # noqa: E731
        return {
            "step": step,
            "fraction": step / 40,
            "examples": step * 8,
            "flores_LRL": cell(4.5 - shift, 4.8),
            "flores_HRL": cell(4.2 - shift, 4.0),
            "xcopa_LRL": cell(0.52 + shift / 10, 0.5),
            "xcopa_HRL": cell(0.55, 0.56),
        }

    rows = {
        "data_amount": [row(10, 0.0), row(20, 0.1), row(40, 0.2)],
        "variants": {
            "linear bridge, frozen encoder (main)": row(40, 0.2),
            "ffn bridge": row(40, 0.25),
            "trained encoder": row(40, 0.3),
        },
    }
    written = plot_ablations(rows, tmp_path)
    assert set(written) == {"data_amount", "bridge", "encoder"}
    for path in written.values():
        assert Path(path).stat().st_size > 10_000 and Path(path).read_bytes()[:4] == b"\x89PNG"
