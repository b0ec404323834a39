"""Benchmark data: GSM8K train (the default training config's data) and MGSM, from the shared data folder.

Lookup: --data-dir, $LANGBRIDGE_DATA, ../shared/data, then <repo>/.bench_assets/data (what
benchmarks/prepare_gpu_assets.sh stages for a machine without the shared folder). With none of them, the benchmark
writes a synthetic stand-in of the same shape (word-salad questions and answers of GSM8K-like length) into a
temporary folder and says so in its results: throughput is then measured on realistic lengths, not real text.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from langbridge.evaluation.data import resolve_data_dir as resolve_eval_data_dir
from langbridge.training.config import TrainConfig, load_config

from .common import REPO

DEFAULT_CONFIG = REPO / "configs" / "default.yaml"
ASSET_DATA = REPO / ".bench_assets" / "data"
REQUIRED = ("gsm8k/train.jsonl", "mgsm/mgsm_en.tsv")
WORDS = (
    "Janet has eggs every day and sells them at the market for two dollars each how many does she make "
    "a train leaves the station at noon travelling miles per hour while another apples oranges baskets "
    "students class teacher books pages read week total left remaining twice half three times more than"
).split()


def find_data_dir(explicit: str | None = None) -> tuple[Path, str]:
    """(data root, where it came from: 'shared' or 'synthetic')."""
    if explicit:
        root = Path(explicit).expanduser()
        missing = [r for r in REQUIRED if not (root / r).is_file()]
        if missing:
            raise FileNotFoundError(f"--data-dir {root} lacks {', '.join(missing)}")
        return root, "shared"
    candidates = [resolve_eval_data_dir(None), ASSET_DATA]
    for root in candidates:
        if root is not None and all((root / r).is_file() for r in REQUIRED):
            return Path(root), "shared"
    return synthetic_data_dir(), "synthetic"


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def synthetic_data_dir(n_train: int = 2000, n_test: int = 250, seed: int = 0) -> Path:
    """GSM8K-shaped train.jsonl and MGSM-shaped TSVs (questions ~45 words, answers ~100 words)."""
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="langbridge-bench-data-"))
    (root / "gsm8k").mkdir()
    (root / "mgsm").mkdir()
    with open(root / "gsm8k" / "train.jsonl", "w", encoding="utf-8") as f:
        for _ in range(n_train):
            q = _sentence(rng, rng.randint(25, 70))
            a = _sentence(rng, rng.randint(50, 150)) + f"\n#### {rng.randint(1, 999)}"
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    for lang in ("en", "zh", "sw", "bn"):
        with open(root / "mgsm" / f"mgsm_{lang}.tsv", "w", encoding="utf-8") as f:
            for _ in range(n_test):
                f.write(f"{_sentence(rng, rng.randint(25, 70))}\t{rng.randint(1, 999)}\n")
    return root


def training_config(data_dir: Path, batch_size: int, overrides: list[str] | None = None) -> TrainConfig:
    """configs/default.yaml (the default CPU run) pointed at `data_dir`, with room for whole GSM8K answers
    (max_lm_length 256: about 3% truncated instead of half), which makes the mean example (encoder + LM tokens)
    about 257 tokens long."""
    return load_config(
        DEFAULT_CONFIG,
        [
            f"data.data_dir={data_dir}",
            f"batch_size={batch_size}",
            "data.eval_size=0",
            "data.max_lm_length=256",
            *(overrides or []),
        ],
    )


def text_sample(data_dir: Path, n: int = 3000) -> list[str]:
    """Questions and answers from the training data, for training synthetic tokenizers."""
    texts = []
    with open(data_dir / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts += [row["question"], row["answer"]]
            if len(texts) >= n:
                break
    return texts


def mgsm_questions(data_dir: Path, language: str = "en", n: int = 32) -> list[str]:
    path = data_dir / "mgsm" / f"mgsm_{language}.tsv"
    rows = [line.split("\t")[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:n]
