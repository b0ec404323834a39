"""Dev-only pilot scores through the registered FLORES tasks (docs/science.md):

    python scripts/science/pilot_eval.py CKPT [--langs eng,spa,swh,zho] [--limit 48] [--out FILE]
    python scripts/science/pilot_eval.py smollm2-135m-instruct --lm-only ...

flores-x2en (nats per English token given the sentence in X) and flores-continuation (the next English sentence)
on the dev portion of FLORES devtest, plus two greedy X -> English outputs per language.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from langbridge.evaluation import evaluate, load_backend
from langbridge.evaluation.data import DataSource
from langbridge.evaluation.registry import BuildOptions, get_task

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--lm-only", action="store_true")
p.add_argument("--langs", default="eng,spa,swh,zho")
p.add_argument("--limit", type=int, default=48)
p.add_argument("--samples", type=int, default=2)
p.add_argument("--out", default=None)
p.add_argument("--tasks", default="flores-x2en,flores-continuation")
a = p.parse_args()
torch.manual_seed(0)
t0 = time.time()
langs = a.langs.split(",")
backend = load_backend(a.model, lm_only=a.lm_only, batch_size=16)
scores = {}
for task in a.tasks.split(","):
    res = evaluate(backend, task, languages=langs, split="dev", limit=a.limit, batch_size=16, progress=False)
    scores[task] = {k: round(v, 3) for k, v in next(iter(res["tasks"].values()))["scores"].items()}
report = {"model": a.model, "lm_only": a.lm_only, "dev_limit": a.limit, "scores": scores}
print(json.dumps(report), flush=True)
task = get_task("flores-x2en-chrf")
source = DataSource.create(None, None)
style = backend.prompt_style()
for lang in langs:
    examples = task.load(source, lang, "dev")[: a.samples]
    requests = [task.build(e, style, BuildOptions(max_new_tokens=40), None) for e in examples]
    for e, out in zip(examples, backend.generate(requests), strict=True):
        print(f"  [{lang}] {out.strip()[:150]!r}   (ref: {e.gold[:60]!r})")
print(f"  ({time.time() - t0:.0f} s)")
if a.out:
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(report, f)
