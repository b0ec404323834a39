"""The demo's statistics, report documents and the --quick pipeline on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import require_shared

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


def test_real_flores_metadata_groups_articles() -> None:
    from langbridge.evaluation import get_task
    from langbridge.evaluation.data import DataSource

    root = require_shared("flores200", "devtest").parent.parent
    task = get_task("flores-continuation")
    dev, test = (task.load(DataSource(root=root), "swh", split) for split in ("dev", "test"))
    pairs = len(dev) + len(test)
    assert 700 < pairs < 1012 and 0.1 < len(dev) / pairs < 0.3


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
    assert "FLORES X → English" in printed and "FLORES continuation" in printed and "XCOPA" in printed

    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == ["langbridge_seed0", "langbridge_seed1"]
    for key in ("translation", "continuation"):
        section = results["tasks"][key]
        assert set(section["languages"]) == {"eng", "swh"} and section["split"] == "test"
        for row in section["languages"].values():
            assert len(row["langbridge_per_seed"]) == 2
            ci = row["delta_vs_lm"]
            assert ci["ci_low"] <= ci["delta"] <= ci["ci_high"] and ci["n"] == 6
        assert section["no_context"] > 0 and section["upper_bound"] == section["languages"]["eng"]["lm_alone"]
    assert set(results["tasks"]["xcopa"]["languages"]) == {"sw"}
    assert results["tasks"]["xcopa"]["split"] == "test"
    # The generation tasks run on the first seed only.
    assert results["tasks"]["mgsm"]["seeds"] == 1 and results["tasks"]["chrf"]["seeds"] == 1
    assert all(0 <= r["langbridge"] <= 100 for r in results["tasks"]["chrf"]["languages"].values())
    assert (out / "results.md").read_text().startswith("### FLORES X → English")
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
            "translation_LRL": cell(4.5 - shift, 4.8),
            "translation_HRL": cell(4.2 - shift, 4.0),
            "continuation_LRL": cell(4.4 - shift, 4.6),
            "continuation_HRL": cell(4.1 - shift, 4.0),
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


# ----------------------------------------------------------------------------- packaged configs


def test_recipes_and_ablation_variants_are_package_data_that_validate(tmp_path: Path) -> None:
    from importlib import resources

    from langbridge.experiments.demo_settings import (
        RECIPES,
        DemoSettings,
        ablation_variants,
        recipe_data,
        recipe_defaults,
    )
    from langbridge.experiments.demo_stages import train_config

    configs = resources.files("langbridge.experiments") / "configs"
    assert all((configs / f"{recipe}.yaml").is_file() for recipe in RECIPES)
    assert (DemoSettings().steps, DemoSettings().lr_bridge) == recipe_defaults("aligned") == (300, 1e-3)
    corpus = tmp_path / "passages.jsonl"
    for recipe in RECIPES:
        steps, lr = recipe_defaults(recipe)
        assert (steps, lr) == (recipe_data(recipe)["max_steps"], recipe_data(recipe)["optim"]["lr_bridge"])
        settings = DemoSettings(recipe=recipe, steps=steps, lr_bridge=lr)
        main = train_config(settings, tmp_path / recipe, 1, corpus, tmp_path)
        assert (main.max_steps, main.optim.lr_bridge, main.seed) == (steps, lr, 1)
        assert main.output_dir == str(tmp_path / recipe) and main.data.data_dir == str(tmp_path)
        assert (main.data.train[0].path == str(corpus)) == (recipe == "unlabeled")
        # Every ablation variant builds a valid config on top of every recipe.
        variants = ablation_variants()
        assert list(variants) == ["ffn bridge", "trained encoder"]
        ffn = train_config(settings, tmp_path / "ffn", 0, corpus, tmp_path, variant=variants["ffn bridge"])
        assert ffn.model.bridge == "ffn" and ffn.model.freeze_encoder
        trained = train_config(
            settings, tmp_path / "enc", 0, corpus, tmp_path, variant=variants["trained encoder"]
        )
        assert trained.model.bridge == "linear" and not trained.model.freeze_encoder
    with pytest.raises(ValueError, match="not one of"):
        recipe_data("other")
