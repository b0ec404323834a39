"""Serving benchmark (a script, not a test): throughput and p50/p95 latency of `langbridge serve` for 1, 8 and 32
concurrent clients.

    python benchmarks/serve_bench.py [--checkpoint DIR] [--clients 1 8 32] [--requests 8 32 32] [--max-tokens 32]
                                     [--server-src OTHER/src] [--output FILE]

Without --checkpoint it builds an untrained LangBridge model from the default pair (e5-small + smollm2-135m-
instruct; the bridge is random, so answers are noise, but the compute per token is that of a trained one) and
saves it to a temporary directory. The server runs as a subprocess (`langbridge serve CKPT`) on a free loopback
port and is killed at the end; clients are asyncio tasks with httpx, each sending chat requests one after another
(greedy, `max_tokens` each). Throughput = completion tokens of all requests / wall time of the level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LANGBRIDGE_SHARED", REPO.parent / "shared")) / "data" / "mgsm"
FALLBACK = [
    "Swali: Janet ana mayai 16. Anauza mayai 3 kila siku. Anabaki na mayai mangapi?",
    "What is 2 plus 3?",
    "Les canards de Janet pondent 16 œufs par jour. Combien en vend-elle ?",
    "ジャネットのアヒルは1日に16個の卵を産みます。何個売りますか？",
]


def questions(count: int) -> list[str]:
    found: list[str] = []
    for lang in ("sw", "zh", "ja", "fr", "de", "ru", "es", "en"):
        path = SHARED / f"mgsm_{lang}.tsv"
        if path.exists():
            # Cut to 200 characters: within the default checkpoint's max_encoder_length=128 e5 tokens.
            found += [line.split("\t")[0][:200] for line in path.read_text(encoding="utf-8").splitlines()[:8]]
    found = found or FALLBACK
    return [found[i % len(found)] for i in range(count)]


def build_untrained(directory: Path) -> str:
    from langbridge import LangBridgeModel, LangBridgeProcessor
    from langbridge.pretrained import DEFAULT_ENCODER, DEFAULT_LM

    model = LangBridgeModel.from_encoder_and_lm(DEFAULT_ENCODER, DEFAULT_LM)
    processor = LangBridgeProcessor.from_encoder_and_lm(DEFAULT_ENCODER, DEFAULT_LM)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def level(
    url: str, model: str, clients: int, per_client: int, max_tokens: int, texts: list[str]
) -> dict:
    latencies: list[float] = []
    tokens = 0

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for r in range(per_client):
            text = texts[(c * per_client + r) % len(texts)]
            body = {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            t0 = time.perf_counter()
            resp = await http.post(f"{url}/v1/chat/completions", json=body)
            resp.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            tokens += resp.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=1800) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 2),
        "p95_latency_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="a LangBridge checkpoint (default: an untrained default pair)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, nargs="+", default=[8, 32, 32], help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--lm-alone", action="store_true", help="benchmark the checkpoint's LM alone instead")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--server-src",
        default=None,
        help="PYTHONPATH of the server (default: this checkout's src), e.g. another branch's for an A/B",
    )
    args = parser.parse_args()
    if len(args.requests) != len(args.clients):
        parser.error("--requests needs one count per --clients level")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or build_untrained(Path(tmp) / "untrained-default-pair")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "langbridge.cli",
            "serve",
            checkpoint,
            "--port",
            str(port),
            "--name",
            "bench",
        ]
        src = args.server_src or str(REPO / "src")
        server = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": src})
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError("the server exited")
                time.sleep(0.5)
            model = "bench/lm-alone" if args.lm_alone else "bench"
            texts = questions(64)
            asyncio.run(level(url, model, 1, 1, 4, texts))  # warm-up
            results = []
            for clients, count in zip(args.clients, args.requests, strict=True):
                per_client = max(1, count // clients)
                result = asyncio.run(level(url, model, clients, per_client, args.max_tokens, texts))
                results.append(result)
                print(json.dumps(result), flush=True)
        finally:
            server.kill()
            server.wait(30)
    base = results[0]["tokens_per_s"]
    print("\n| clients | requests | completion tokens | wall s | tokens/s | speed-up | p50 s | p95 s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['clients']} | {r['requests']} | {r['completion_tokens']} | {r['wall_s']} | {r['tokens_per_s']} "
            f"| {r['tokens_per_s'] / base:.1f}x | {r['p50_latency_s']} | {r['p95_latency_s']} |"
        )
    if args.output:
        Path(args.output).write_text(
            json.dumps({"model": model, "max_tokens": args.max_tokens, "results": results})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
