"""The FastAPI application: OpenAI-compatible routes over the served models, `/health`, and the side-by-side page.

Every error is an OpenAI error object (`{"error": {"message", "type", "param", "code"}}`) with a one-line message;
tracebacks go to the server log only. With an API key, `/v1/*` and `/api/*` need `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import QueueFull
from ..evaluation.requests import GenerationRequest
from .models import Choice, GenerationStream, RequestError, ServedModel
from .schemas import ChatCompletionRequest, CompletionRequest, error_body, new_id, now

__all__ = ["create_app"]

logger = logging.getLogger("langbridge.serving")

MAX_PROMPTS = 32  # prompts in one /v1/completions request
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_CHAT_TOKENS = 512
DISCONNECT_POLL_S = 0.5


class LanguageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str = Field(max_length=20000)


def _error(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None, **headers: str
):
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers or None)


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    first = err.errors()[0] if err.errors() else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}.", None
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    field = ".".join(loc) or None
    if first.get("type") == "missing" and field:
        return f"Missing required parameter: '{field}'.", field
    if field is None:
        return f"Invalid request body: {first['msg']}.", None
    return f"Invalid value for '{field}': {first['msg']}.", field


def create_app(
    models: Sequence[ServedModel],
    api_key: str | None = None,
    identifier: Callable[[], Any] | None = None,
    start_engines: bool = True,
) -> FastAPI:
    """`models`: what the server holds (see `load_served_models`); `identifier`: returns the language identifier
    for the page (built on first use; None when the analysis extra is missing). Engines start and stop with the
    application's lifespan unless `start_engines` is False."""
    by_id = {m.id: m for m in models}
    state: dict[str, Any] = {}

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_engines:
            for m in models:
                m.engine.start()
        try:
            yield
        finally:
            if start_engines:
                for m in models:
                    m.engine.stop()

    app = FastAPI(title="LangBridge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return _error(400, message, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "authentication_error" if err.status_code == 401 else "invalid_request_error"
        code = "not_found" if err.status_code == 404 else None
        return _error(err.status_code, str(err.detail), kind, None, code, **(err.headers or {}))

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        code = "model_not_found" if err.status == 404 else None
        return _error(err.status, str(err), "invalid_request_error", err.param, code)

    @app.exception_handler(QueueFull)
    async def _full(request: Request, err: QueueFull) -> JSONResponse:
        return _error(
            429,
            f"The server is busy: {err} Retry later.",
            "rate_limit_error",
            None,
            "queue_full",
            **{"Retry-After": "1"},
        )

    app.add_middleware(_CatchAll)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise StarletteHTTPException(
                401,
                "Incorrect or missing API key: pass it as 'Authorization: Bearer KEY'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def get_model(name: str) -> ServedModel:
        if name not in by_id:
            raise RequestError(
                f"The model '{name}' does not exist; this server has {', '.join(sorted(by_id))}.",
                "model",
                404,
            )
        return by_id[name]

    # -- informational routes ---------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": {
                m.id: {"running_rows": m.engine.running_rows, "waiting": m.engine.waiting} for m in models
            },
        }

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> dict[str, Any]:
        data = [
            {
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": "langbridge",
                "kind": m.kind,
                "context_length": m.context_length,
            }
            for m in models
        ]
        return {"object": "list", "data": data}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("langbridge.serving").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    @app.post("/api/language", dependencies=[Depends(authorize)])
    async def language(body: LanguageRequest) -> dict[str, Any]:
        """The language an answer is written in (the analysis module's identifier), for the page."""
        if identifier is None:
            return {"language": None, "name": None, "confidence": None, "reason": "identifier not available"}
        if "identifier" not in state:
            state["identifier"] = await asyncio.to_thread(identifier)
        ident = state["identifier"]
        if ident is None:
            return {
                "language": None,
                "name": None,
                "confidence": None,
                "reason": "install langbridge[analysis]",
            }
        from ..analysis.languages import resolve_language

        found = await asyncio.to_thread(ident.identify, body.text)
        name = resolve_language(found.language).name if found.language else None
        reason = None if found.language else f"undetermined ({found.letters} letters)"
        return {"language": found.language, "name": name, "confidence": found.confidence, "reason": reason}

    # -- completions ------------------------------------------------------------------------------------------
    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        model = get_model(body.model)
        prompts = body.prompts()
        if not prompts:
            raise RequestError("The prompt is empty.", "prompt")
        if len(prompts) > MAX_PROMPTS:
            raise RequestError(f"At most {MAX_PROMPTS} prompts per request, got {len(prompts)}.", "prompt")
        texts, id_lists = [], []
        vocab = len(model.tokenizer)
        for p in prompts:
            if isinstance(p, list):
                if not p or any(not 0 <= t < vocab for t in p):
                    raise RequestError(f"Prompt token ids must be non-empty and in [0, {vocab}).", "prompt")
                id_lists.append(p)
                texts.append(model.tokenizer.decode(p, skip_special_tokens=True))
            else:
                id_lists.append(None)
                texts.append(p)
        if body.logprobs is not None:
            return await _score(model, body, texts, id_lists)
        if any(not t.strip() for t in texts):
            raise RequestError("The prompt is empty or whitespace-only.", "prompt")
        if body.max_tokens is not None and body.max_tokens <= 0:
            raise RequestError(
                f"max_tokens must be >= 1, got {body.max_tokens} (0 is allowed only with echo and logprobs).",
                "max_tokens",
            )
        jobs = []
        for text in texts:
            req = model.completion_request(text)
            used = model.prompt_tokens(req)
            jobs.append((req, used, model.check_budget(used, body.max_tokens, DEFAULT_COMPLETION_TOKENS)))
        return await _run(model, body, request, jobs, chat=False, echo=texts if body.echo else None)

    async def _score(
        model: ServedModel, body: CompletionRequest, texts: list[str], id_lists: list[list[int] | None]
    ) -> dict[str, Any]:
        if not body.echo:
            raise RequestError(
                "logprobs is supported only with echo=true (scoring the prompt, as lm-evaluation-harness does).",
                "logprobs",
            )
        max_tokens = 0 if body.max_tokens is None else body.max_tokens
        if max_tokens not in (0, 1):
            raise RequestError(
                "With echo and logprobs, max_tokens must be 0 or 1 (one greedy token after the prompt).",
                "max_tokens",
            )
        tok = model.tokenizer
        choices, used = [], 0
        for i, (text, ids) in enumerate(zip(texts, id_lists, strict=True)):
            ids = ids if ids is not None else tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) + max_tokens > model.context_length:
                raise RequestError(
                    f"The prompt is {len(ids)} tokens; this model's context length is {model.context_length}.",
                    "prompt",
                )
            lps, tops, next_id, next_lp = await asyncio.to_thread(model.score, ids)
            tokens = [tok.decode([t]) for t in ids]
            top = [None] + [{tok.decode([k]): v for k, v in t.items()} for t in tops[1:]]
            if max_tokens:
                ids = [*ids, next_id]
                tokens.append(tok.decode([next_id]))
                lps.append(next_lp)
                top.append({tokens[-1]: next_lp})
            offsets, at = [], 0
            for t in tokens:
                offsets.append(at)
                at += len(t)
            used += len(ids)
            logprobs = {"tokens": tokens, "token_logprobs": lps, "top_logprobs": top, "text_offset": offsets}
            choices.append(
                {"index": i, "text": "".join(tokens), "logprobs": logprobs, "finish_reason": "length"}
            )
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": model.id,
            "choices": choices,
            "usage": {"prompt_tokens": used, "completion_tokens": 0, "total_tokens": used},
        }

    # -- chat -------------------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        model = get_model(body.model)
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as err:
            raise RequestError(f"Invalid message content: {err}.", "messages") from None
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise RequestError("The messages contain no non-empty user message.", "messages")
        for i, m in enumerate(messages):
            if not m["content"].strip():
                raise RequestError(f"Message {i} is empty.", f"messages.{i}.content")
        req = model.chat_request(messages)
        used = model.prompt_tokens(req)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = model.check_budget(used, limit, DEFAULT_CHAT_TOKENS)
        return await _run(model, body, request, [(req, used, max_tokens)], chat=True)

    # -- shared generation path -------------------------------------------------------------------------------
    async def _run(
        model: ServedModel,
        body: CompletionRequest | ChatCompletionRequest,
        request: Request,
        jobs: list[tuple[GenerationRequest, int, int]],
        chat: bool,
        echo: list[str] | None = None,
    ) -> Any:
        sampling = {
            "n": body.n,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
            "stop": body.stop_list(),
        }
        streams: list[GenerationStream] = []
        try:
            for req, _, max_tokens in jobs:  # all submitted now, so a full queue answers 429 before streaming
                streams.append(model.generate(req, max_tokens, **sampling))
        except BaseException:
            for s in streams:
                await s.aclose()
            raise
        merged = _merge(streams, body.n)
        prompt_tokens = sum(used for _, used, _ in jobs)
        rid, created = new_id("chatcmpl" if chat else "cmpl"), now()
        kind = "chat.completion" if chat else "text_completion"
        if body.stream:
            options = (body.model_extra or {}).get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return StreamingResponse(
                _sse(merged, model, rid, created, chat, prompt_tokens, include_usage, echo, body.n),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        finished: dict[int, Choice] = {}

        async def collect() -> None:
            async for index, choice, _ in merged:
                if choice.finish_reason is not None:
                    finished[index] = choice

        await _until_disconnected(request, collect())
        choices = []
        for index in sorted(finished):
            c = finished[index]
            text = (echo[index // body.n] if echo else "") + c.text
            if chat:
                choices.append(
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": c.finish_reason,
                    }
                )
            else:
                choices.append(
                    {"index": index, "text": text, "logprobs": None, "finish_reason": c.finish_reason}
                )
        completion = sum(len(c.ids) for c in finished.values())
        return {
            "id": rid,
            "object": kind,
            "created": created,
            "model": model.id,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }

    return app


class _CatchAll:
    """Any other exception becomes a 500 OpenAI error (Starlette's own last-resort handler answers, then re-raises,
    which makes uvicorn reset the connection). The traceback goes to the log only."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as err:
            logger.exception("request failed")
            if not started:  # a started response (a stream) reports its own errors in-band
                response = _error(500, f"Internal server error ({type(err).__name__}).", "server_error")
                await response(scope, receive, send)


async def _merge(streams: list[GenerationStream], n: int) -> AsyncIterator[tuple[int, Choice, str]]:
    """Interleave the streams of several prompts as (choice index over all prompts, choice, new text)."""
    if len(streams) == 1:
        try:
            async for choice, text in streams[0]:
                yield choice.index, choice, text
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue[tuple[int, Choice, str] | BaseException | None] = asyncio.Queue()

    async def pump(p: int, stream: GenerationStream) -> None:
        try:
            async for choice, text in stream:
                await queue.put((p * n + choice.index, choice, text))
            await queue.put(None)
        except BaseException as err:  # noqa: B036 - handed to the consumer
            await queue.put(err)
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(pump(p, s)) for p, s in enumerate(streams)]
    try:
        done = 0
        while done < len(tasks):
            item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()


async def _until_disconnected(request: Request, work: Awaitable[None]) -> None:
    """Run `work`; cancel it (and so its engine requests) if the client goes away first."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()
        await task
    finally:
        task.cancel()


async def _sse(
    merged: AsyncIterator[tuple[int, Choice, str]],
    model: ServedModel,
    rid: str,
    created: int,
    chat: bool,
    prompt_tokens: int,
    include_usage: bool,
    echo: list[str] | None,
    n: int,
) -> AsyncIterator[str]:
    """OpenAI's server-sent events: one chunk per piece of new text, a chunk with finish_reason per choice,
    then `data: [DONE]`. An error after the stream started is sent as an error event."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(index: int, text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        body = {"id": rid, "object": kind, "created": created, "model": model.id, "choices": [choice]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    completion = 0
    started: set[int] = set()
    try:
        async for index, choice, text in merged:
            first = index not in started
            started.add(index)
            if first and (chat or echo):
                yield chunk(index, "" if chat else echo[index // n], None, role=chat)  # type: ignore[index]
            if text:
                yield chunk(index, text, None)
            if choice.finish_reason is not None:
                completion += len(choice.ids)
                yield chunk(index, None, choice.finish_reason)
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            }
            body = {
                "id": rid,
                "object": kind,
                "created": created,
                "model": model.id,
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(body)}\n\n"
    except Exception as err:
        logger.exception("stream failed")
        yield f"data: {json.dumps(error_body(f'Generation failed ({type(err).__name__}).', 'server_error'))}\n\n"
    yield "data: [DONE]\n\n"
