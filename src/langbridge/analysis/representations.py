"""Are LangBridge's LM representations more language-agnostic than the LM's own? (Yoon et al. 2024, Sec. 6)

Pooling, precisely: we run the frozen LM once per sentence and mean-pool its LAST hidden state (``hidden_states[-1]``,
i.e. after the final norm) over the input positions:

* LangBridge: the LM input is ``[BOS] + bridged encoder states + enc_eos`` (``lm_prompt=""``); we pool over the soft
  positions given by ``model.soft_token_mask`` (the bridged states of the real encoder tokens and ``enc_eos``),
  excluding BOS and padding.
* LM alone: the sentence tokenized by the LM's tokenizer; we pool over its text tokens (attention mask, special
  tokens such as BOS/EOS excluded).

Metrics are pure functions on numpy arrays (``reps_by_lang``: language -> [n_sentences, hidden], rows aligned
across languages because FLORES is parallel):

* :func:`retrieval_accuracy`: top-1 cross-lingual retrieval with cosine similarity, each language -> pivot and back.
* :func:`language_silhouette`: silhouette score of the language labels on standardized features (lower = the
  languages overlap more = more language-agnostic).
* :func:`pca_2d`: StandardScaler + PCA to two dimensions for the scatter plot, as in the paper's figure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .languages import LanguageInfo, resolve_language

DEFAULT_LANGUAGES: tuple[str, ...] = ("eng", "swh", "tel", "spa", "deu", "ben", "tha", "zho")
FLORES_FILES_HINT = (
    "Put the FLORES-200 devtest files at <data-dir>/flores200/devtest/<code>_<Script>.devtest (one sentence per line, "
    "line-aligned, e.g. eng_Latn.devtest, swh_Latn.devtest) and pass --data-dir <data-dir> or set LANGBRIDGE_DATA."
)


# ----------------------------------------------------------------------------------------------------------
# Metrics (numpy only)


def _check_aligned(reps_by_lang: Mapping[str, np.ndarray]) -> int:
    if len(reps_by_lang) < 2:
        raise ValueError(f"Need representations for at least two languages, got {list(reps_by_lang)}.")
    sizes = {lang: np.asarray(r).shape for lang, r in reps_by_lang.items()}
    rows = {s[0] for s in sizes.values()}
    dims = {s[1:] for s in sizes.values()}
    if any(len(s) != 2 for s in sizes.values()) or len(rows) != 1 or len(dims) != 1:
        raise ValueError(
            f"Representations must be 2-D arrays [n_sentences, hidden] with the same shape for every language "
            f"(parallel sentences), got {sizes}."
        )
    n = rows.pop()
    if n < 2:
        raise ValueError(f"Need at least two sentences per language, got {n}.")
    return n


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def retrieval_accuracy(reps_by_lang: Mapping[str, np.ndarray], pivot: str = "eng") -> dict[str, Any]:
    """Top-1 cross-lingual retrieval accuracy (cosine) between every language and ``pivot``.

    Row i of each language is the translation of row i of the pivot. ``to_pivot``: fraction of sentences of the
    language whose nearest pivot sentence is their translation; ``from_pivot``: the reverse direction. Chance
    level is 1 / n_sentences.
    """
    n = _check_aligned(reps_by_lang)
    if pivot not in reps_by_lang:
        raise ValueError(f"Pivot language {pivot!r} is not among the languages {list(reps_by_lang)}: add it.")
    target = np.arange(n)
    pivot_unit = _unit_rows(reps_by_lang[pivot])
    per_language: dict[str, dict[str, float]] = {}
    for lang, reps in reps_by_lang.items():
        if lang == pivot:
            continue
        sim = _unit_rows(reps) @ pivot_unit.T  # [n_lang, n_pivot]
        to_pivot = float(np.mean(sim.argmax(axis=1) == target))
        from_pivot = float(np.mean(sim.argmax(axis=0) == target))
        per_language[lang] = {
            "to_pivot": to_pivot,
            "from_pivot": from_pivot,
            "mean": (to_pivot + from_pivot) / 2,
        }
    return {
        "pivot": pivot,
        "n_sentences": n,
        "chance": 1.0 / n,
        "per_language": per_language,
        "average": float(np.mean([v["mean"] for v in per_language.values()])),
    }


def stack_by_language(reps_by_lang: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate to ``X`` [sum n, hidden] and the language label of every row."""
    langs = list(reps_by_lang)
    x = np.concatenate([np.asarray(reps_by_lang[lang], dtype=np.float64) for lang in langs], axis=0)
    labels = np.concatenate([np.full(len(reps_by_lang[lang]), lang, dtype=object) for lang in langs])
    return x, labels


def _standardize(x: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(x)


def language_silhouette(reps_by_lang: Mapping[str, np.ndarray], metric: str = "euclidean") -> float:
    """Silhouette score of the language labels on standardized features, in [-1, 1].

    High: sentences cluster by language. Near 0 or negative: languages overlap (language-agnostic).
    """
    from sklearn.metrics import silhouette_score

    _check_aligned(reps_by_lang)
    x, labels = stack_by_language(reps_by_lang)
    return float(silhouette_score(_standardize(x), labels, metric=metric))


def pca_2d(reps_by_lang: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """StandardScaler + PCA(2) over all languages together: (coords [N, 2], labels [N], explained variance ratio)."""
    from sklearn.decomposition import PCA

    _check_aligned(reps_by_lang)
    x, labels = stack_by_language(reps_by_lang)
    pca = PCA(n_components=2, random_state=0)
    coords = pca.fit_transform(_standardize(x))
    return coords, labels, pca.explained_variance_ratio_


def representation_metrics(reps_by_lang: Mapping[str, np.ndarray], pivot: str = "eng") -> dict[str, Any]:
    return {
        "retrieval": retrieval_accuracy(reps_by_lang, pivot=pivot),
        "silhouette": language_silhouette(reps_by_lang),
        "hidden_size": int(np.asarray(next(iter(reps_by_lang.values()))).shape[1]),
    }


# ----------------------------------------------------------------------------------------------------------
# FLORES-200


def _flores_candidates(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    else:
        if os.environ.get("LANGBRIDGE_DATA"):
            roots.append(Path(os.environ["LANGBRIDGE_DATA"]))
        if os.environ.get("LANGBRIDGE_SHARED"):
            roots.append(Path(os.environ["LANGBRIDGE_SHARED"]) / "data")
        roots.append(Path.cwd().parent / "shared" / "data")
    out = []
    for root in roots:
        out += [root / "flores200" / "devtest", root / "devtest", root]
    return out


def find_flores_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """First directory holding ``*.devtest`` files among data_dir (or LANGBRIDGE_DATA, ../shared/data)."""
    for cand in _flores_candidates(data_dir):
        if cand.is_dir() and any(cand.glob("*.devtest")):
            return cand
    return None


def _flores_file(directory: Path, info: LanguageInfo) -> Path:
    if info.flores and (directory / f"{info.flores}.devtest").is_file():
        return directory / f"{info.flores}.devtest"
    matches = sorted(directory.glob(f"{info.code}_*.devtest"))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(
            f"Several FLORES scripts for {info.code!r} in {directory}: {[m.name for m in matches]}; "
            "name one explicitly, e.g. --languages zho_Hans."
        )
    available = sorted(p.stem for p in directory.glob("*.devtest"))
    raise FileNotFoundError(
        f"No FLORES-200 devtest file for {info.code!r} ({info.name}) in {directory}; available: {available}. "
        + FLORES_FILES_HINT
    )


def load_flores(
    languages: Sequence[str], n: int | None = None, data_dir: str | os.PathLike[str] | None = None
) -> dict[str, list[str]]:
    """First ``n`` parallel FLORES-200 devtest sentences per language, keyed by short code (``swh``).

    Reads local files (``data_dir``, LANGBRIDGE_DATA or ../shared/data); without them, tries the Hugging Face
    hub dataset ``facebook/flores`` via ``datasets``.
    """
    if n is not None and n < 2:
        raise ValueError(f"n must be at least 2 sentences per language, got {n}.")
    infos = [resolve_language(code) for code in languages]
    codes = [i.code for i in infos]
    if len(set(codes)) != len(codes):
        raise ValueError(f"Duplicate languages in {list(languages)} (resolved to {codes}).")
    directory = find_flores_dir(data_dir)
    texts: dict[str, list[str]] = {}
    if directory is not None:
        for info in infos:
            with open(_flores_file(directory, info), encoding="utf-8") as handle:
                texts[info.code] = [line.rstrip("\n") for line in handle]
    else:
        texts = _load_flores_hub(infos, data_dir)
    sizes = {code: len(t) for code, t in texts.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(
            f"FLORES files are not line-aligned (line counts {sizes}): use the original devtest files."
        )
    total = next(iter(sizes.values()))
    if n is not None and n > total:
        raise ValueError(
            f"Requested n={n} sentences but FLORES devtest has {total}: use --n {total} or fewer."
        )
    keep = total if n is None else n
    for code, t in texts.items():
        empty = [i for i, s in enumerate(t[:keep]) if not s.strip()]
        if empty:
            raise ValueError(f"FLORES {code} has empty lines at {empty[:5]}: the file looks corrupted.")
    return {code: t[:keep] for code, t in texts.items()}


def _load_flores_hub(infos: Sequence[LanguageInfo], data_dir: Any) -> dict[str, list[str]]:
    searched = ", ".join(str(p) for p in _flores_candidates(data_dir))
    try:
        import datasets

        return {
            i.code: list(
                datasets.load_dataset("facebook/flores", i.flores or i.code, split="devtest")["sentence"]
            )
            for i in infos
        }
    except (
        Exception
    ) as err:  # offline, gated, or datasets missing: all mean "no data", explain where to put it
        raise FileNotFoundError(
            f"FLORES-200 devtest not found locally (searched {searched}) and the hub dataset facebook/flores "
            f"could not be loaded ({type(err).__name__}: {err}). " + FLORES_FILES_HINT
        ) from err


# ----------------------------------------------------------------------------------------------------------
# Extraction (torch)


def _length_order(lengths: Sequence[int]) -> np.ndarray:
    # Longest first: similar lengths share a batch (little padding) and memory errors show up at once.
    return np.argsort(-np.asarray(lengths), kind="stable")


def _masked_mean(hidden: Any, mask: Any) -> Any:
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("A sentence has no input positions to pool over (empty after tokenization).")
    return (hidden * mask).sum(dim=1) / counts


def langbridge_representations(
    model: Any,
    processor: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    device: Any = None,
    progress: bool = True,
    desc: str = "LangBridge representations",
) -> np.ndarray:
    """Mean of the LM's last hidden state over the soft positions (bridged encoder states + enc_eos): [N, H]."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    enc_lengths = [
        len(ids) for ids in processor.encoder_tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    ]
    order = _length_order(enc_lengths)
    out = np.zeros((len(texts), model.lm.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), tqdm(total=len(texts), desc=desc, unit="sent", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            chunk = [texts[i] for i in idx]
            batch = processor(chunk, lm_prompts=[""] * len(chunk), padding_side="right", return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            # Encode once and hand the bridged states to forward, so we know how many soft slots each row has.
            bridged, bridged_mask = model.encode(batch["encoder_input_ids"], batch["encoder_attention_mask"])
            result = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                bridged_embeds=bridged,
                bridged_mask=bridged_mask,
                output_hidden_states=True,
                logits_to_keep=1,  # logits are not needed; skipping the vocabulary projection saves ~20% time
            )
            mask = model.soft_token_mask(batch["input_ids"], batch["attention_mask"], bridged_mask.sum(dim=1))
            pooled = _masked_mean(result.hidden_states[-1].float(), mask)
            out[idx] = pooled.cpu().numpy()
            bar.update(len(chunk))
    return out


def lm_representations(
    lm: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    max_length: int = 512,
    device: Any = None,
    progress: bool = True,
    desc: str = "LM representations",
) -> np.ndarray:
    """Mean of the causal LM's last hidden state over the sentence's text tokens (no BOS/EOS/padding): [N, H]."""
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "The LM tokenizer has neither a pad nor an EOS token: set tokenizer.pad_token first."
            )
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id works
    device = torch.device(device) if device is not None else next(lm.parameters()).device
    lm.eval()
    lengths = [
        len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    ]
    order = _length_order(lengths)
    out = np.zeros((len(texts), lm.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), tqdm(total=len(texts), desc=desc, unit="sent", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            chunk = [texts[i] for i in idx]
            enc = tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=max_length,
                padding_side="right",  # positions start at 0 for every row, as for a single sentence
                return_special_tokens_mask=True,
                return_tensors="pt",
            )
            ids = enc["input_ids"].to(device)
            attn = enc["attention_mask"].to(device)
            mask = attn.bool() & ~enc["special_tokens_mask"].to(device).bool()
            # The base model (no LM head) returns the last hidden state after the final norm, as hidden_states[-1].
            hidden = lm.base_model(input_ids=ids, attention_mask=attn).last_hidden_state
            pooled = _masked_mean(hidden.float(), mask)
            out[idx] = pooled.cpu().numpy()
            bar.update(len(chunk))
    return out


def split_by_language(reps: np.ndarray, sentences: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """Inverse of concatenating the languages' sentences in dict order."""
    out, start = {}, 0
    for lang, sents in sentences.items():
        out[lang] = reps[start : start + len(sents)]
        start += len(sents)
    return out


def analyze_representations(
    sentences: Mapping[str, Sequence[str]],
    *,
    model: Any = None,
    processor: Any = None,
    lm: Any = None,
    lm_tokenizer: Any = None,
    pivot: str = "eng",
    batch_size: int = 16,
    max_length: int = 512,
    device: Any = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Extract pooled representations for LangBridge (``model``+``processor``) and/or the LM alone
    (``lm``+``lm_tokenizer``) and compute the metrics. Returns {"langbridge"|"lm": {"reps", "metrics", "pca"}}."""
    if pivot not in sentences:
        raise ValueError(f"Pivot language {pivot!r} must be among the languages {list(sentences)}.")
    flat = [s for sents in sentences.values() for s in sents]
    results: dict[str, dict[str, Any]] = {}
    runs = []
    if model is not None:
        if processor is None:
            raise ValueError(
                "A LangBridge model needs its processor (LangBridgeProcessor.from_pretrained(dir))."
            )
        runs.append(
            (
                "langbridge",
                lambda: langbridge_representations(model, processor, flat, batch_size, device, progress),
            )
        )
    if lm is not None:
        if lm_tokenizer is None:
            raise ValueError("The LM needs its tokenizer (AutoTokenizer.from_pretrained(lm_dir)).")
        runs.append(
            (
                "lm",
                lambda: lm_representations(lm, lm_tokenizer, flat, batch_size, max_length, device, progress),
            )
        )
    if not runs:
        raise ValueError("Nothing to analyze: pass a LangBridge model+processor and/or an LM+tokenizer.")
    for name, extract in runs:
        reps = split_by_language(extract(), sentences)
        coords, labels, evr = pca_2d(reps)
        results[name] = {
            "reps": reps,
            "metrics": {**representation_metrics(reps, pivot=pivot), "pca_explained_variance": evr.tolist()},
            "pca": (coords, labels),
        }
    return results


def representations_markdown(report: dict[str, Any]) -> str:
    names = {"langbridge": "LangBridge", "lm": "LM alone"}
    models = list(report["models"])
    langs = [lang for lang in report["languages"] if lang != report["pivot"]]
    lines = [
        "# Language-agnosticism of LM representations",
        "",
        f"Model: `{report['model']}`. FLORES-200 devtest, first {report['n']} parallel sentences per language "
        f"({', '.join(report['languages'])}). {report['pooling']}",
        "",
        "| metric | " + " | ".join(names.get(m, m) for m in models) + " |",
        "|---|" + "---:|" * len(models),
        "| language silhouette (lower = more language-agnostic) | "
        + " | ".join(f"{report['models'][m]['silhouette']:.3f}" for m in models)
        + " |",
        f"| retrieval top-1 vs {report['pivot']}, average of both directions (chance "
        f"{1 / report['n']:.3f}) | "
        + " | ".join(f"{report['models'][m]['retrieval']['average']:.3f}" for m in models)
        + " |",
        "",
        f"## Retrieval top-1 accuracy per language (X→{report['pivot']} / {report['pivot']}→X)",
        "",
        "| language | " + " | ".join(names.get(m, m) for m in models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for lang in langs:
        cells = []
        for m in models:
            r = report["models"][m]["retrieval"]["per_language"][lang]
            cells.append(f"{r['to_pivot']:.3f} / {r['from_pivot']:.3f}")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines += ["", f"Runtime: {report['runtime_s']:.1f} s on {report['device']}.", ""]
    if report.get("plots"):
        lines += [f"![PCA]({Path(report['plots'][0]).name})", ""]
    return "\n".join(lines)
