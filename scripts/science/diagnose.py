"""Diagnosis for docs/science.md: what the bridge reads (e5-small's hidden states, layer by layer) against what
the frozen LM expects (SmolLM2's input embeddings).

    python scripts/science/diagnose.py [--out outputs/science/diagnosis.json]

Per encoder hidden state (0 = embeddings, 12 = last layer), on real tokens of English sentences:
  - geometry: norm of the mean vector, mean norm of the residual (state - mean), mean pairwise cosine;
  - token identity: a ridge probe from the state to the LM input embedding of the character-overlapping LM
    token, fitted on English training sentences (C4), tested on FLORES dev English: R^2 and nearest-token
    accuracy over the LM vocabulary;
  - meaning across languages: FLORES dev sentences in X, mean-pooled and centred per language, retrieve their
    English translation among all dev sentences (top-1 accuracy; chance 1/n).
English training text only for the fit; FLORES dev only for the scores.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from langbridge.analysis.representations import find_flores_dir, load_flores
from langbridge.bridge_init import aligned_lm_tokens
from langbridge.evaluation.data import DataSource
from langbridge.evaluation.tasks.flores import portion_of, read_documents
from langbridge.loaders import load_encoder, load_lm
from langbridge.processing import load_encoder_tokenizer, load_lm_tokenizer
from langbridge.training.data import split_sentences

p = argparse.ArgumentParser()
p.add_argument("--out", default="outputs/science/diagnosis.json")
p.add_argument("--fit-sentences", type=int, default=1500)
p.add_argument("--langs", default="deu,spa,zho,swh,ben,tel,tha")
a = p.parse_args()
torch.manual_seed(0)
t0 = time.time()

encoder, _ = load_encoder("e5-small")
lm, _ = load_lm("smollm2-135m-instruct")
enc_tok = load_encoder_tokenizer("e5-small")
lm_tok = load_lm_tokenizer("smollm2-135m-instruct")
encoder.eval()
E = lm.get_input_embeddings().weight.detach().float()  # [V, D]
e_norm = E.norm(dim=-1)


@torch.no_grad()
def states(texts: list[str]) -> tuple[list[torch.Tensor], list]:
    """All hidden states [L+1, n_tokens, H] per sentence (no special tokens) and the encoder offsets."""
    out, offsets = [], []
    for i in range(0, len(texts), 32):
        batch = enc_tok(
            texts[i : i + 32],
            return_tensors="pt",
            padding=True,
            return_offsets_mapping=True,
            add_special_tokens=False,
            truncation=True,
            max_length=128,
        )
        offs = batch.pop("offset_mapping")
        hs = torch.stack(encoder(**batch, output_hidden_states=True).hidden_states)  # [L+1, B, S, H]
        for b in range(hs.shape[1]):
            keep = batch["attention_mask"][b].bool()
            out.append(hs[:, b, keep])
            offsets.append(offs[b, keep].tolist())
    return out, offsets


def aligned_targets(texts: list[str], offsets: list) -> list[list[int]]:
    return [aligned_lm_tokens(lm_tok, t, o) for t, o in zip(texts, offsets, strict=True)]


# English training sentences (fit) and FLORES dev (test)
fit_sents = []
for line in open("../shared/data/english_demo/c4_demo.jsonl", encoding="utf-8"):
    fit_sents += split_sentences(json.loads(line)["text"])
fit_sents = fit_sents[: a.fit_sentences]
flores = find_flores_dir(None)
docs = read_documents(DataSource.create(None, None))
dev = [i for i, d in enumerate(docs) if portion_of(d) == "dev"]
langs = a.langs.split(",")
sents = load_flores(["eng", *langs], data_dir=flores)
dev_en = [sents["eng"][i] for i in dev]

fit_h, fit_off = states(fit_sents)
fit_y = aligned_targets(fit_sents, fit_off)
test_h, test_off = states(dev_en)
test_y = aligned_targets(dev_en, test_off)
n_states = fit_h[0].shape[0]


def gather(hs: list[torch.Tensor], ys: list[list[int]], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.cat([h[layer] for h in hs])
    Y = torch.tensor([t for y in ys for t in y])
    keep = Y >= 0
    return X[keep], Y[keep]


report: dict = {
    "lm_embedding": {
        "mean_norm": round(float(e_norm.mean()), 3),
        "mean_vector_norm": round(float(E.mean(0).norm()), 3),
    },
    "layers": [],
}
for layer in range(n_states):
    X, Y = gather(fit_h, fit_y, layer)
    Xt, Yt = gather(test_h, test_y, layer)
    mean = X.mean(0)
    resid = X - mean
    idx = torch.randperm(X.shape[0])[:2000]
    unit = torch.nn.functional.normalize(X[idx], dim=-1)
    cos = unit @ unit.T
    pair_cos = float((cos.sum() - cos.diagonal().sum()) / (cos.numel() - cos.shape[0]))
    # ridge probe to the LM embedding of the aligned token (centred and scaled features)
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z, Zt = (X - mu) / sd, (Xt - mu) / sd
    T = E[Y]
    Z1, Zt1 = torch.cat([Z, torch.ones(len(Z), 1)], 1), torch.cat([Zt, torch.ones(len(Zt), 1)], 1)
    W = torch.linalg.solve(Z1.T @ Z1 + 10.0 * torch.eye(Z1.shape[1]), Z1.T @ T)
    P = Zt1 @ W
    Tt = E[Yt]
    r2 = 1 - float(((P - Tt) ** 2).sum() / ((Tt - Tt.mean(0)) ** 2).sum())
    nearest = (torch.nn.functional.normalize(P, dim=-1) @ torch.nn.functional.normalize(E, dim=-1).T).argmax(
        -1
    )
    acc = float((nearest == Yt).float().mean())
    report["layers"].append(
        {
            "layer": layer,
            "mean_vector_norm": round(float(mean.norm()), 3),
            "residual_norm": round(float(resid.norm(dim=-1).mean()), 3),
            "pairwise_cosine": round(pair_cos, 3),
            "probe_r2": round(r2, 3),
            "probe_nearest_token_acc": round(acc, 3),
        }
    )
    print(json.dumps(report["layers"][-1]), flush=True)


def pooled(hs: list[torch.Tensor], layer: int) -> torch.Tensor:
    v = torch.stack([h[layer].mean(0) for h in hs])
    return torch.nn.functional.normalize(v - v.mean(0), dim=-1)


retrieval = {}
for lang in langs:
    hx, _ = states([sents[lang][i] for i in dev])
    row = []
    for layer in range(n_states):
        sim = pooled(hx, layer) @ pooled(test_h, layer).T
        row.append(round(float((sim.argmax(-1) == torch.arange(len(dev))).float().mean()), 3))
    retrieval[lang] = row
    print(lang, row, flush=True)
report["retrieval_top1"] = retrieval
report["retrieval_chance"] = round(1 / len(dev), 4)
report["dev_sentences"] = len(dev)
report["fit_sentences"] = len(fit_sents)
report["seconds"] = round(time.time() - t0, 1)
with open(a.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
print("wrote", a.out)
