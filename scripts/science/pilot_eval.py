"""Dev-only pilot score: FLORES X -> English through the bridge (nats per English token, lower is better).

    python scripts/science/pilot_eval.py CKPT [--langs eng,swh,zho] [--n 48]

Sentences come from the dev portion of FLORES devtest (experiments/flores.py portion_of); the LM scores the
English sentence i given sentence i in X through the encoder, with the checkpoint processor's LM prompt.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from langbridge import LangBridgeModel, LangBridgeProcessor
from langbridge.analysis.representations import find_flores_dir, load_flores
from langbridge.experiments.flores import portion_of, read_documents, score_langbridge

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("--langs", default="eng,spa,swh,zho")
p.add_argument("--n", type=int, default=48)
p.add_argument("--generate", type=int, default=2)
a = p.parse_args()
torch.manual_seed(0)
langs = a.langs.split(",")
flores = find_flores_dir(None)
docs = read_documents(flores)
dev = [i for i, d in enumerate(docs) if portion_of(d) == "dev"][: a.n]
sents = load_flores(sorted(set(langs) | {"eng"}), data_dir=flores)
model = LangBridgeModel.from_pretrained(a.checkpoint).eval()
proc = LangBridgeProcessor.from_pretrained(a.checkpoint)
targets = [sents["eng"][i] for i in dev]
out = {}
t0 = time.time()
for lang in langs:
    nll, tok = score_langbridge(model, proc, [sents[lang][i] for i in dev], targets, batch_size=16)
    out[lang] = round(float(nll.sum() / tok.sum()), 3)
print(json.dumps({"checkpoint": a.checkpoint, "dev_sentences": len(dev), "nats_per_token": out}), flush=True)
for lang in langs:
    batch = proc([sents[lang][i] for i in dev[: a.generate]], return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=40, do_sample=False)
    for text in proc.decode_new_tokens(gen, batch):
        print(f"  [{lang}] {text.strip()[:160]}")
print(f"  ({time.time() - t0:.0f} s)")
