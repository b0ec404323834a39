"""`langbridge serve` on tiny random models over loopback: the official openai client (streaming and not), 32
concurrent clients equal to one-at-a-time, lm-evaluation-harness `local-completions`, every bad request, and the
side-by-side page in headless Chromium. Servers run uvicorn in a thread on a free 127.0.0.1 port and stop in a
finally; every request has a timeout and the counts are fixed."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'langbridge[serve]'")
httpx = pytest.importorskip(
    "httpx", reason="the serve extra is not installed: pip install 'langbridge[serve]'"
)
uvicorn = pytest.importorskip(
    "uvicorn", reason="the serve extra is not installed: pip install 'langbridge[serve]'"
)

from langbridge.engine import ContinuousBatchingEngine, EngineRequest  # noqa: E402
from langbridge.serving.app import create_app  # noqa: E402
from langbridge.serving.cli import language_identifier  # noqa: E402
from langbridge.serving.models import load_served_models  # noqa: E402

TIMEOUT = 60.0  # seconds for any one request; tiny models answer in well under a second
QUESTIONS = [
    "What is 2 plus 3?",
    "Swali: Janet ana mayai 16. Anauza mayai 3 kila siku sokoni.",
    "জ্যানেটের হাঁসগুলি প্রতিদিন ১৬টি করে ডিম পাড়ে।",
    "ジャネットのアヒルは1日に16個の卵を産みます。",
    "x",
    "Les canards de Janet pondent 16 œufs par jour.",
    "Утки Джанет откладывают 16 яиц в день.",
    "Janet has 16 eggs and sells 3 of them every day at the market for two dollars each.",
]


@pytest.fixture(scope="module")
def checkpoint(tiny_dirs, tmp_path_factory) -> str:
    from langbridge import LangBridgeModel, LangBridgeProcessor

    torch.manual_seed(0)
    model = LangBridgeModel.from_encoder_and_lm(tiny_dirs["bert"], tiny_dirs["llama"]).eval()
    processor = LangBridgeProcessor.from_encoder_and_lm(
        tiny_dirs["bert"], tiny_dirs["llama"], max_encoder_length=128
    )
    path = tmp_path_factory.mktemp("serve") / "tiny-bridge"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app) -> Iterator[str]:
    """uvicorn in a thread on a free loopback port; stopped (should_exit) and joined on exit."""
    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.05)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def server(checkpoint) -> Iterator[str]:
    models = load_served_models(checkpoint, max_batch=32, max_queue=64)
    with running(create_app(models, identifier=language_identifier)) as url:
        yield url


def _chat(url: str, model: str, text: str, max_tokens: int = 8, **extra) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_health_and_openai_client(server) -> None:
    openai = pytest.importorskip("openai", reason="the openai client is not installed (serve extra)")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny-bridge", "tiny-bridge/lm-alone"]
    assert httpx.get(f"{server}/health", timeout=TIMEOUT).json()["status"] == "ok"
    for model in ids:
        messages = [{"role": "user", "content": QUESTIONS[1]}]
        full = client.chat.completions.create(model=model, messages=messages, max_tokens=10, temperature=0)
        assert full.choices[0].finish_reason in ("stop", "length")
        assert full.usage.completion_tokens >= 1 and full.usage.prompt_tokens > 5
        stream = client.chat.completions.create(
            model=model, messages=messages, max_tokens=10, temperature=0, stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == full.choices[0].message.content
        text = client.completions.create(model=model, prompt=QUESTIONS[0], max_tokens=6, temperature=0)
        streamed = client.completions.create(
            model=model, prompt=QUESTIONS[0], max_tokens=6, temperature=0, stream=True
        )
        assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text
    # n, seeded sampling (reproducible), stop strings and echo.
    sampled = [
        client.completions.create(
            model=ids[0], prompt=QUESTIONS[2], max_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=3
        )
        for _ in range(2)
    ]
    assert [c.text for c in sampled[0].choices] == [c.text for c in sampled[1].choices]
    assert len(sampled[0].choices) == 3
    greedy = client.completions.create(model=ids[0], prompt=QUESTIONS[0], max_tokens=12, temperature=0)
    answer = greedy.choices[0].text
    if len(answer) > 4:
        stop = answer[2:4]
        cut = client.completions.create(
            model=ids[0], prompt=QUESTIONS[0], max_tokens=12, temperature=0, stop=[stop]
        )
        assert cut.choices[0].text == answer[: answer.find(stop)] and cut.choices[0].finish_reason == "stop"
    echoed = client.completions.create(
        model=ids[0], prompt=QUESTIONS[0], max_tokens=12, temperature=0, echo=True
    )
    assert echoed.choices[0].text == QUESTIONS[0] + answer


@contextmanager
def gated(model, total: int) -> Iterator[None]:
    """Holds the engine's next prefill until the other requests of `total` wait, so that they all join one batch."""
    prefill = model.engine.prefill

    def hold(payloads):
        for _ in range(int(TIMEOUT / 0.01)):
            if model.engine.waiting + len(payloads) >= total:
                break
            time.sleep(0.01)
        model.engine.prefill = prefill
        return prefill(payloads)

    model.engine.prefill = hold
    try:
        yield
    finally:
        model.engine.prefill = prefill


@pytest.mark.parametrize("kind", ["langbridge", "lm"])
def test_32_concurrent_clients_equal_one_at_a_time(checkpoint, kind) -> None:
    models = load_served_models(checkpoint, max_batch=32, max_queue=64)
    (model,) = [m for m in models if m.kind == kind]
    jobs = [(QUESTIONS[i % len(QUESTIONS)] + f" ({i})", 4 + i % 9) for i in range(32)]
    with running(create_app(models)) as url:
        alone = [_chat(url, model.id, q, b)["choices"][0]["message"]["content"] for q, b in jobs]
        assert model.engine.peak_rows == 1

        async def together() -> list[str]:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:

                async def one(q: str, b: int) -> str:
                    body = {
                        "model": model.id,
                        "messages": [{"role": "user", "content": q}],
                        "max_tokens": b,
                        "temperature": 0,
                    }
                    r = await client.post(f"{url}/v1/chat/completions", json=body)
                    assert r.status_code == 200, r.text
                    return r.json()["choices"][0]["message"]["content"]

                return await asyncio.gather(*(one(*job) for job in jobs))

        with gated(model, 32):  # the first request(s) wait in prefill for the others
            concurrent = asyncio.run(together())
    assert concurrent == alone
    assert model.engine.peak_rows == 32  # all 32 decoded in one batch
    assert len(set(alone)) > 16

    # Seeded sampling draws from each request's own generator: the same answer alone or in a batch.
    sampled = [{"temperature": 0.9, "top_p": 0.95, "seed": i} for i in range(4)]
    with running(create_app(models)) as url:
        alone = [_chat(url, model.id, QUESTIONS[i], 10, **sampled[i]) for i in range(4)]

        async def seeded() -> list[dict]:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                bodies = [
                    {
                        "model": model.id,
                        "messages": [{"role": "user", "content": QUESTIONS[i]}],
                        "max_tokens": 10,
                        **sampled[i],
                    }
                    for i in range(4)
                ]
                responses = await asyncio.gather(
                    *(client.post(f"{url}/v1/chat/completions", json=b) for b in bodies)
                )
                return [r.json() for r in responses]

        with gated(model, 4):
            together = asyncio.run(seeded())
    texts = [[r["choices"][0]["message"]["content"] for r in rs] for rs in (alone, together)]
    assert texts[0] == texts[1]


def test_requests_join_a_running_batch(checkpoint) -> None:
    """A request submitted while another decodes joins the running batch (one more prefill, no second loop)."""
    (model,) = [m for m in load_served_models(checkpoint, max_batch=8) if m.kind == "langbridge"]
    engine: ContinuousBatchingEngine = model.engine.start()
    try:
        first_token, done = threading.Event(), threading.Event()
        results: dict[int, list[int]] = {0: [], 1: []}
        finished: list[int] = []

        def request(i: int, text: str, budget: int) -> EngineRequest:
            def token(c: int, t: int) -> None:
                results[i].append(t)
                first_token.set()

            def finish(c: int, reason: str) -> None:
                finished.append(i)
                if len(finished) == 2:
                    done.set()

            return EngineRequest(model.completion_request(text), budget, on_token=token, on_finish=finish)

        engine.submit(request(0, QUESTIONS[1], 40))
        assert first_token.wait(TIMEOUT)
        engine.submit(request(1, QUESTIONS[2], 3))
        assert done.wait(TIMEOUT)
        assert engine.prefills == 2 and finished == [1, 0]  # the short one joined and left first
        assert len(results[0]) == 40 and len(results[1]) == 3
    finally:
        engine.stop()


def _error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and "\n" not in error["message"]
    assert "Traceback" not in r.text
    for w in words:
        assert w in error["message"], error["message"]


def test_bad_requests_get_openai_errors(server) -> None:
    chat, comp = f"{server}/v1/chat/completions", f"{server}/v1/completions"
    ok = {"model": "tiny-bridge", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 4}
    post = lambda url, body: httpx.post(url, json=body, timeout=TIMEOUT)  # noqa: E731
    bad_json = httpx.post(
        chat,
        content=b'{"model": "tiny-bridge", "messages": [',
        timeout=TIMEOUT,
        headers={"Content-Type": "application/json"},
    )
    _error(bad_json, 400, "not valid JSON")
    _error(post(chat, {**ok, "max_tokens": "many"}), 400, "max_tokens")
    _error(post(chat, {**ok, "temperature": "hot"}), 400, "temperature")
    _error(post(chat, {**ok, "messages": "hello"}), 400, "messages")
    _error(post(chat, {**ok, "n": 1000}), 400, "'n'")
    _error(post(chat, {k: v for k, v in ok.items() if k != "messages"}), 400, "Missing", "messages")
    _error(post(chat, {**ok, "messages": []}), 400, "messages")
    _error(post(chat, {**ok, "messages": [{"role": "user", "content": "   "}]}), 400, "no non-empty user")
    _error(post(comp, {"model": "tiny-bridge", "prompt": ""}), 400, "empty")
    _error(
        post(chat, {**ok, "messages": [{"role": "user", "content": "word " * 200}]}),
        400,
        "max_encoder_length=128",
    )
    _error(
        post(comp, {"model": "tiny-bridge/lm-alone", "prompt": "word " * 600}), 400, "context length is 512"
    )
    _error(post(chat, {**ok, "max_tokens": 0}), 400, "max_tokens must be >= 1")
    _error(post(chat, {**ok, "max_tokens": -3}), 400, "max_tokens must be >= 1")
    _error(post(chat, {**ok, "max_tokens": 100000}), 400, "max_tokens=100000 is too large", "512")
    _error(post(chat, {**ok, "model": "gpt-4"}), 404, "gpt-4", "does not exist")
    _error(post(comp, {"model": "tiny-bridge", "prompt": [10**9]}), 400, "token ids")
    _error(post(comp, {"model": "tiny-bridge", "prompt": "a", "logprobs": 1}), 400, "echo")
    _error(httpx.get(f"{server}/v1/nothing", timeout=TIMEOUT), 404)
    # Unknown fields are ignored (chat UIs send many); no file paths are read from requests.
    assert post(chat, {**ok, "user": "u1", "logit_bias": {"1": 2}, "path": "/etc/passwd"}).status_code == 200


def test_api_key_and_full_queue(checkpoint) -> None:
    models = load_served_models(checkpoint, max_batch=1, max_queue=1)
    gate, entered = threading.Event(), threading.Event()
    model = models[0]
    prefill = model.engine.prefill

    def gated(payloads):  # holds the first request in prefill so that the next one waits in the queue
        entered.set()
        assert gate.wait(TIMEOUT)
        return prefill(payloads)

    model.engine.prefill = gated
    body = {"model": model.id, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    with running(create_app(models, api_key="s3cret")) as url, httpx.Client(timeout=TIMEOUT) as client:
        _error(client.post(f"{url}/v1/chat/completions", json=body), 401, "API key")
        _error(client.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "API key")
        _error(client.get(f"{url}/v1/models", headers={"Authorization": "s3cret"}), 401, "API key")
        assert client.get(f"{url}/health").status_code == 200
        auth = {"Authorization": "Bearer s3cret"}
        assert client.get(f"{url}/v1/models", headers=auth).status_code == 200
        _error(
            client.post(f"{url}/v1/chat/completions", json={**body, "n": 2}, headers=auth),
            400,
            "--max-batch 1",
        )
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, f"{url}/v1/chat/completions", json=body, headers=auth)
            assert entered.wait(
                TIMEOUT
            )  # one request is in (held) prefill; max_batch=1 keeps the next waiting
            second = pool.submit(client.post, f"{url}/v1/chat/completions", json=body, headers=auth)
            for _ in range(int(TIMEOUT / 0.01)):
                if model.engine.waiting == 1:
                    break
                time.sleep(0.01)
            third = client.post(f"{url}/v1/chat/completions", json=body, headers=auth)
            _error(third, 429, "busy")
            assert third.headers["Retry-After"] == "1"
            gate.set()
            assert first.result(TIMEOUT).status_code == 200 and second.result(TIMEOUT).status_code == 200


def test_encoder_runs_once_per_request(checkpoint) -> None:
    (model,) = [m for m in load_served_models(checkpoint) if m.kind == "langbridge"]
    bridge = model.backend.model
    encode, rows = bridge.encode, []

    def counting(ids, mask=None):
        rows.append(ids.shape[0])
        return encode(ids, mask)

    bridge.encode = counting
    body = {
        "model": model.id,
        "prompt": QUESTIONS[:3],
        "max_tokens": 6,
        "n": 3,
        "temperature": 0.8,
        "seed": 1,
    }
    with running(create_app([model])) as url:
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 9
    assert sum(rows) == 3  # three prompts, three answers each: the encoder read each prompt once


def test_disconnected_stream_leaves_the_batch(checkpoint) -> None:
    (model,) = [m for m in load_served_models(checkpoint) if m.kind == "lm"]
    body = {"model": model.id, "prompt": QUESTIONS[0], "max_tokens": 400, "temperature": 0, "stream": True}
    with running(create_app([model])) as url:
        with (
            httpx.Client(timeout=TIMEOUT) as client,
            client.stream("POST", f"{url}/v1/completions", json=body) as r,
        ):
            assert r.status_code == 200
            for n, _ in enumerate(r.iter_lines()):
                if n >= 3:
                    break  # leave after a few chunks: the connection closes
        for _ in range(int(TIMEOUT / 0.05)):
            if model.engine.running_rows == 0:
                break
            time.sleep(0.05)
        assert model.engine.running_rows == 0
        steps = model.engine.steps
        assert steps < 399  # the row left the batch before its budget
        r = httpx.post(
            f"{url}/v1/completions", json={**body, "stream": False, "max_tokens": 3}, timeout=TIMEOUT
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_serve_command_line(checkpoint, capsys) -> None:
    from langbridge.cli import build_parser, main
    from langbridge.serving.cli import build_app

    args = build_parser().parse_args(["serve", checkpoint, "--api-key", "k", "--max-batch", "4"])
    assert (args.host, args.port, args.max_queue) == ("127.0.0.1", 8000, 256)
    app = build_app(args)
    assert {r.path for r in app.routes} >= {
        "/",
        "/health",
        "/v1/models",
        "/v1/completions",
        "/v1/chat/completions",
    }
    assert main(["serve", str(Path(checkpoint) / "missing")]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert main(["serve", checkpoint, "--max-batch", "0"]) == 1


def test_failures_inside_the_server_are_json_errors(checkpoint) -> None:
    """A prefill that fails answers 500 (or an error event in a started stream) and the engine goes on."""
    (model,) = [m for m in load_served_models(checkpoint) if m.kind == "lm"]
    prefill, calls = model.engine.prefill, []

    def failing_once(payloads):
        calls.append(len(payloads))
        if len(calls) <= 2:
            raise RuntimeError("simulated failure")
        return prefill(payloads)

    model.engine.prefill = failing_once
    body = {"model": model.id, "prompt": QUESTIONS[0], "max_tokens": 3, "temperature": 0}
    with running(create_app([model])) as url, httpx.Client(timeout=TIMEOUT) as client:
        _error(client.post(f"{url}/v1/completions", json=body), 500, "Internal server error (RuntimeError)")
        streamed = client.post(f"{url}/v1/completions", json={**body, "stream": True})
        assert streamed.status_code == 200
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert (
            events[-1] == "[DONE]"
            and "Generation failed (RuntimeError)" in json.loads(events[0])["error"]["message"]
        )
        assert client.post(f"{url}/v1/completions", json=body).json()["usage"]["completion_tokens"] == 3


def test_echo_logprobs_score_the_prompt(server, tiny_dirs) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    ids = tok(QUESTIONS[1], add_special_tokens=False)["input_ids"]
    body = {
        "model": "tiny-bridge/lm-alone",
        "prompt": [ids],
        "max_tokens": 1,
        "echo": True,
        "logprobs": 1,
        "temperature": 0,
    }
    r = httpx.post(f"{server}/v1/completions", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    logprobs = r.json()["choices"][0]["logprobs"]
    assert len(logprobs["token_logprobs"]) == len(ids) + 1
    # The served LM alone is the checkpoint's LM: the tiny llama with BOS first.
    lm = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([[tok.bos_token_id, *ids]])).logits[0], -1)
    expected = [float(logp[i, t]) for i, t in enumerate(ids)]
    assert logprobs["token_logprobs"][: len(ids)] == pytest.approx(expected, abs=1e-4)
    bridge = httpx.post(
        f"{server}/v1/completions", json={**body, "model": "tiny-bridge"}, timeout=TIMEOUT
    ).json()
    lps = bridge["choices"][0]["logprobs"]["token_logprobs"]
    assert lps[0] is None and all(lp <= 0 for lp in lps[1:])


def test_lm_eval_local_completions(server, checkpoint, tmp_path) -> None:
    pytest.importorskip(
        "lm_eval", reason="lm-evaluation-harness is not installed (pip install 'lm-eval[api]')"
    )
    pytest.importorskip(
        "tenacity", reason="lm-eval's API models need its api extra: pip install 'lm-eval[api]'"
    )
    import lm_eval
    from lm_eval.tasks import TaskManager

    data = tmp_path / "copa.jsonl"
    rows = [
        {
            "premise": "Mtu alifungua bomba kwa hiyo",
            "choice1": "maji yalitoka.",
            "choice2": "choo kilijaa.",
            "label": 0,
            "question": QUESTIONS[i],
            "answer": "5",
        }
        for i in range(4)
    ]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tmp_path / "tiny_copa.yaml").write_text(
        "task: tiny_copa\n" + common + "output_type: multiple_choice\ndoc_to_text: '{{premise}}'\n"
        "doc_to_choice: '{{[choice1, choice2]}}'\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n"
    )
    (tmp_path / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + "output_type: generate_until\ndoc_to_text: '{{question}}'\n"
        "doc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n"
    )
    tokenizer = Path(checkpoint) / "lm_tokenizer"
    for model in ("tiny-bridge", "tiny-bridge/lm-alone"):
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url={server}/v1/completions,model={model},tokenizer={tokenizer},"
            "tokenizer_backend=huggingface,num_concurrent=2,max_retries=1,timeout=60",
            tasks=["tiny_copa", "tiny_gen"],
            task_manager=TaskManager(include_path=str(tmp_path)),
        )
        assert 0.0 <= out["results"]["tiny_copa"]["acc,none"] <= 1.0
        assert "exact_match,none" in out["results"]["tiny_gen"]
        assert out["n-samples"]["tiny_copa"]["effective"] == 4


def _chromium() -> tuple[str, str] | None:
    for browser in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(browser)
        driver = shutil.which("chromedriver")
        if path and driver:
            return path, driver
    return None


def test_page_in_headless_chromium(server, tmp_path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (serve extra)")
    found = _chromium()
    if found is None:
        pytest.skip("Chromium and chromedriver not found: apt-get install chromium chromium-driver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from langbridge.serving.screenshot import open_page, save_screenshot

    driver = open_page(webdriver, *found, server)
    try:
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(QUESTIONS[1])
        driver.find_element(By.ID, "max_tokens").clear()
        driver.find_element(By.ID, "max_tokens").send_keys("12")
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, TIMEOUT).until(
            lambda d: all(
                p.get_attribute("data-done") == "1" for p in d.find_elements(By.CSS_SELECTOR, ".pane")
            )
        )
        for pane in ("pane-langbridge", "pane-lm"):
            element = driver.find_element(By.ID, pane)
            assert element.find_element(By.CSS_SELECTOR, ".answer").text.strip()
            assert "error" not in element.find_element(By.CSS_SELECTOR, ".answer").get_attribute("class")
            assert element.find_element(By.CSS_SELECTOR, ".lang").text.startswith("Answer language:")
        shot = save_screenshot(driver, tmp_path / "page.png")
        assert shot.stat().st_size > 1000
    finally:
        driver.quit()


@pytest.mark.real_models
def test_real_lm_alias_served_lm_only() -> None:
    """`langbridge serve smollm2-135m-instruct --lm-only`: the alias of the default pair's LM, with its chat template."""
    from langbridge.pretrained import DEFAULT_LM, resolve_pretrained

    pytest.importorskip("gguf", reason="the default pair needs the default-models extra (pip install gguf)")
    try:
        resolve_pretrained(DEFAULT_LM)
    except Exception as err:  # the weight package is not installed
        pytest.skip(f"default LM unavailable ({type(err).__name__}: {err}); run scripts/setup.sh")
    (model,) = load_served_models(DEFAULT_LM, lm_only=True, max_batch=4)
    assert (model.id, model.kind) == (DEFAULT_LM, "lm")
    with running(create_app([model])) as url:
        answer = _chat(url, model.id, "What is 2 plus 3?", max_tokens=12)
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["prompt_tokens"] > 10  # the question inside SmolLM2's ChatML template
