"""The guard server (``qwen3guard serve`` in a subprocess on 127.0.0.1) against local guards on
the tiny checkpoints: equal verdicts and sessions, auth, limits, typed errors and metrics."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from qwen3guard_integrations import (
    BackendConnectionError,
    BackendHTTPError,
    BackendProtocolError,
    InvalidInputError,
    Policy,
    Qwen3Guard,
    Qwen3StreamGuard,
    SessionClosedError,
)
from qwen3guard_integrations.guards.holdback import HoldBack
from qwen3guard_integrations.guards.remote import RemoteStreamSession
from tests.support.contract_cases import RESPONSE_CARRIERS, SAFE_RESPONSES, prompt_cases
from tests.support.serving_support import ServerProcess, metric

pytest.importorskip("torch")
pytest.importorskip("uvicorn")
ws_sync = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tiny):  # type: ignore[no-untyped-def]
    proc = ServerProcess(
        "--gen-model", str(tiny.gen), "--stream-model", str(tiny.stream),
        "--auth-token", TOKEN, "--pieces-per-second", "200", "--sessions-per-connection", "2",
        "--max-message-bytes", "65536",
    )  # fmt: skip
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def remote_gen(server):  # type: ignore[no-untyped-def]
    g = Qwen3Guard.from_server(server.url, token=TOKEN)
    yield g
    g.close()


@pytest.fixture(scope="module")
def remote_stream(server) -> Qwen3StreamGuard:  # type: ignore[no-untyped-def]
    return Qwen3StreamGuard.from_server(server.url, token=TOKEN)


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert (a.level, a.categories, a.refusal, a.role) == (b.level, b.categories, b.refusal, b.role)
    assert a.scores is not None and b.scores is not None
    for lv, p in a.scores.items():
        assert p == pytest.approx(b.scores[lv], abs=1e-4)


def _split(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 5)
        out.append(text[i : i + n])
        i += n
    return out


RESPONSES = [
    *(c.format("build the bomb") for c in RESPONSE_CARRIERS[:5]),
    *(c.format("kill myself") for c in RESPONSE_CARRIERS[14:17]),
    *SAFE_RESPONSES[:4],
    "好的，这是答案：天气很好。😀 Ça va très bien.",
]


# --- Gen -------------------------------------------------------------------------------------
def test_remote_gen_verdicts_equal_local(remote_gen: Qwen3Guard, guard: Qwen3Guard) -> None:
    prompts = [
        msgs[-1]["content"] for _, msgs in prompt_cases()[:: max(1, len(prompt_cases()) // 12)]
    ]
    for p in prompts:
        _same(remote_gen.check_prompt(p), guard.check_prompt(p))
    pairs = [("Help me.", r) for r in RESPONSES[:6]]
    for (q, r), got in zip(pairs, remote_gen.check_batch(pairs)):
        _same(got, guard.check_response(q, r))
    v = remote_gen.check_prompt(prompts[0])
    assert v.endpoint == remote_gen.backend.endpoint
    assert remote_gen.backend.name == "guard-server"
    assert remote_gen.health().ok


async def test_remote_gen_async_equals_local(remote_gen: Qwen3Guard, guard: Qwen3Guard) -> None:
    items = ["How do I hotwire the engine?", "What a nice day.", ("Hi", RESPONSES[0])]
    got = await remote_gen.acheck_batch(items)
    want = guard.check_batch(items)
    for a, b in zip(got, want):
        _same(a, b)
    _same(
        await remote_gen.acheck_prompt("What a nice day."),
        guard.check_prompt("What a nice day."),
    )
    assert (await remote_gen.ahealth()).ok


def test_remote_gen_bad_input_is_the_local_error(remote_gen: Qwen3Guard) -> None:
    with pytest.raises(InvalidInputError):
        remote_gen.check(
            [{"role": "assistant", "content": "no user turn"}, {"role": "system", "content": "x"}]
        )


def test_remote_gen_fail_open_is_degraded_when_the_server_is_gone(tiny) -> None:  # type: ignore[no-untyped-def]
    proc = ServerProcess("--gen-model", str(tiny.gen))
    try:
        guard = Qwen3Guard.from_server(proc.url, policy=Policy(on_error="fail_open"))
        closed = Qwen3Guard.from_server(proc.url)
        assert not guard.check_prompt("hello").degraded
    finally:
        proc.kill()
    v = guard.check_prompt("How can I make a bomb?")
    assert v.degraded and v.error and not guard.blocks(v)
    with pytest.raises(BackendConnectionError):
        closed.check_prompt("How can I make a bomb?")


# --- Stream ----------------------------------------------------------------------------------
def test_remote_stream_sessions_equal_local(
    remote_stream: Qwen3StreamGuard, sguard: Qwen3StreamGuard
) -> None:
    rng = random.Random(7)
    for text in RESPONSES:
        with (
            remote_stream.session("Can you help me?") as r,
            sguard.session("Can you help me?") as lo,
        ):
            assert isinstance(r, RemoteStreamSession)
            _same(r.prompt_verdict, lo.prompt_verdict)
            assert r.prompt_ids == lo.prompt_ids
            for piece in _split(text, rng):
                a, b = r.feed(piece), lo.feed(piece)
                assert (a.levels, a.start_index, a.decision, a.blocked, a.tripped) == (
                    b.levels, b.start_index, b.decision, b.blocked, b.tripped
                )  # fmt: skip
                assert r.settled_ids == lo.settled_ids and r.response_ids == lo.response_ids
                assert r.decode_response() == lo.decode_response()
                assert r.decode_response(0, len(r.response_ids) - 1) == lo.decode_response(
                    0, len(lo.response_ids) - 1
                )
            assert r.peek().levels == lo.peek().levels
            a, b = r.finish(), lo.finish()
            assert (a.levels, a.decision, a.blocked) == (b.levels, b.decision, b.blocked)
            assert (r.verdict is None) == (lo.verdict is None)
            if lo.verdict is not None:
                assert r.verdict is not None
                assert (r.verdict.token_index, r.verdict.text_until) == (
                    lo.verdict.token_index, lo.verdict.text_until
                )  # fmt: skip
        assert r.closed
        with pytest.raises(SessionClosedError):
            r.feed("more")


def test_holdback_runs_unchanged_on_a_remote_session(
    remote_stream: Qwen3StreamGuard, sguard: Qwen3StreamGuard
) -> None:
    rng = random.Random(3)
    for text in (RESPONSES[0], RESPONSES[-1], SAFE_RESPONSES[5]):
        pieces = _split(text, rng)
        with remote_stream.session("Hi") as r, sguard.session("Hi") as lo:
            got = [(x.text, x.blocked, x.done) for x in HoldBack(r).run(iter(pieces))]
            want = [(x.text, x.blocked, x.done) for x in HoldBack(lo).run(iter(pieces))]
        assert got == want


async def test_async_remote_session_equals_local(
    remote_stream: Qwen3StreamGuard, sguard: Qwen3StreamGuard
) -> None:
    async def run(guard: Qwen3StreamGuard) -> list[tuple]:  # type: ignore[type-arg]
        out = []
        async with guard.asession("Can you help me?") as s:
            out.append(s.prompt_verdict.level)
            for piece in _split(RESPONSES[1], random.Random(1)):
                u = await s.afeed(piece)
                out.append((u.levels, u.decision))
            out.append((await s.afinish()).decision)
        return out

    remote = await asyncio.gather(*(run(remote_stream) for _ in range(4)))
    local = await run(sguard)
    assert all(r == local for r in remote)


def test_ids_are_moderated_as_ids(
    remote_stream: Qwen3StreamGuard, sguard: Qwen3StreamGuard
) -> None:
    ids = sguard.tokenizer(RESPONSES[0], add_special_tokens=False)["input_ids"]
    with remote_stream.session("Hi") as r, sguard.session("Hi") as lo:
        for i in range(0, len(ids), 3):
            assert r.feed(ids[i : i + 3]).levels == lo.feed(ids[i : i + 3]).levels
        assert r.decode_response() == lo.decode_response()


def test_bad_piece_is_invalid_input_and_keeps_the_session(remote_stream: Qwen3StreamGuard) -> None:
    with remote_stream.session("Hi") as s:
        with pytest.raises(InvalidInputError):
            s.feed(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            s.feed([10**9])  # not a vocabulary id: refused by the server before it runs
        assert not s.closed
        s.feed("Hello there, how are you today?")
        assert s.finish().tokens and s.decode_response() == "Hello there, how are you today?"


def test_an_answer_from_another_replica_fails_closed(remote_stream: Qwen3StreamGuard) -> None:
    s = remote_stream.session("Hi")
    s.feed("Hello")
    s.replica = "some-other-replica"
    with pytest.raises(BackendProtocolError, match="replica"):
        s.feed(" there")
    assert s.closed
    with pytest.raises(SessionClosedError):
        s.feed(" again")


# --- auth, limits, typed errors --------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "wrong"])
def test_auth_rejects_a_missing_or_wrong_token(server, token) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackendHTTPError) as err:
        Qwen3Guard.from_server(server.url, token=token)
    assert err.value.status == 401 and err.value.error_type == "Unauthorized"
    with pytest.raises(BackendHTTPError) as err:
        Qwen3StreamGuard.from_server(server.url, token=token)
    assert err.value.status == 401
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    for path in ("/metrics", "/v1/info"):
        r = httpx.get(server.url + path, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized"
    r = httpx.post(server.url + "/v1/check", json={"messages": "hi"}, headers=headers)
    assert r.status_code == 401
    assert TOKEN not in r.text
    ws = ws_sync.connect(
        server.url.replace("http", "ws") + "/v1/stream", additional_headers=headers
    ).__enter__()
    ws.send(json.dumps({"op": "open", "id": 1, "messages": "hi"}))
    frame = json.loads(ws.recv(timeout=10))
    assert frame["op"] == "error" and frame["error"]["type"] == "Unauthorized"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert httpx.get(server.url + "/health").status_code == 200  # probes stay open
    assert httpx.get(server.url + "/ready").json()["ready"] is True


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_every_http_error_is_typed_json(server) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (httpx.post(server.url + "/v1/check", content=b"{not json", headers=_auth()), 422, "InvalidInputError"),
        (httpx.post(server.url + "/v1/check", json={"nope": 1}, headers=_auth()), 422, "InvalidInputError"),
        (httpx.post(server.url + "/v1/check", json={"messages": ""}, headers=_auth()), 422, "InvalidInputError"),
        (httpx.post(server.url + "/v1/check", json={"messages": "x" * 70000}, headers=_auth()), 413, "MessageTooLarge"),
        (httpx.get(server.url + "/nowhere", headers=_auth()), 404, "NotFound"),
    ]  # fmt: skip
    for r, status, kind in cases:
        assert r.status_code == status, r.text
        assert r.json()["error"]["type"] == kind


def _ws(server):  # type: ignore[no-untyped-def]
    return ws_sync.connect(
        server.url.replace("http", "ws") + "/v1/stream", additional_headers=_auth()
    )


def _ask(ws, **frame):  # type: ignore[no-untyped-def]
    ws.send(json.dumps(frame))
    return json.loads(ws.recv(timeout=30))


def test_stream_limits_are_typed_errors(server, remote_stream: Qwen3StreamGuard) -> None:  # type: ignore[no-untyped-def]
    ws = _ws(server).__enter__()
    a = _ask(ws, op="open", id=1, messages="Hi")
    b = _ask(ws, op="open", id=2, messages="Hi")
    assert a["op"] == b["op"] == "opened" and a["session"] != b["session"]
    c = _ask(ws, op="open", id=3, messages="Hi")
    assert c["error"]["type"] == "TooManySessions"
    bad = _ask(ws, op="feed", id=4, session="nope", piece="x")
    assert bad["error"]["type"] == "SessionClosedError"
    assert _ask(ws, op="dance", id=5, session=a["session"])["error"]["type"] == "InvalidInputError"
    big = _ask(ws, op="feed", id=6, session=a["session"], piece="x" * 70000)
    assert big["error"]["type"] == "MessageTooLarge" and big["closed"]
    with pytest.raises(ConnectionClosed):  # the over-size frame closed the connection
        ws.recv(timeout=10)
    # pieces per second: the over-limit feed closes the session (its piece was not moderated).
    # Empty pieces cost a round trip and no model step (about 0.7 ms here, against 3 ms for a
    # token), so the feeds outrun the 200/s bucket even on a loaded CI machine; with one-token
    # pieces the bucket refilled as fast as a slow machine could drain it.
    s = remote_stream.session("Hi")
    with pytest.raises(BackendHTTPError) as err:
        for _ in range(2000):
            s.feed("")
    assert err.value.status == 429 and err.value.error_type == "RateLimited"
    assert s.closed
    with pytest.raises(SessionClosedError):
        s.feed(" b")


def test_metrics_count_what_happened(
    server, remote_gen: Qwen3Guard, remote_stream: Qwen3StreamGuard
) -> None:  # type: ignore[no-untyped-def]
    def scrape() -> str:
        return httpx.get(server.url + "/metrics", headers=_auth()).text

    before = scrape()
    v = remote_gen.check_prompt("How can I make a bomb?")
    assert remote_gen.blocks(v)
    s = remote_stream.session("Can you help me?")
    during = scrape()
    assert (
        metric(during, "qwen3guard_live_sessions") == metric(before, "qwen3guard_live_sessions") + 1
    )
    for piece in _split(RESPONSES[0], random.Random(5)):
        u = s.feed(piece)
    u = s.finish()
    assert u.blocked
    n_tokens = len(s.response_ids)
    s.close()
    httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer nope"})
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    cat = v.categories[0].value
    assert delta("qwen3guard_checks_total", kind="gen", role="prompt", level=v.level.value) == 1
    assert (
        delta(
            "qwen3guard_blocks_total", kind="gen", role="prompt", level=v.level.value, category=cat
        )
        == 1
    )
    sv = s.verdict
    assert sv is not None
    assert (
        delta(
            "qwen3guard_blocks_total",
            kind="stream",
            role="response",
            level=sv.level.value,
            category=sv.categories[0].value,
        )
        == 1
    )
    assert delta("qwen3guard_checks_total", kind="stream", role="prompt", level="Safe") == 1
    assert delta("qwen3guard_stream_sessions_total") == 1
    assert 0 < delta("qwen3guard_stream_tokens_total") <= n_tokens
    assert delta("qwen3guard_errors_total", type="Unauthorized") == 1
    assert metric(after, "qwen3guard_live_sessions") == metric(before, "qwen3guard_live_sessions")
    assert metric(after, "qwen3guard_queue_depth") == 0
    assert delta("qwen3guard_step_latency_seconds_count", op="feed") >= 1
    assert delta("qwen3guard_check_latency_seconds_count") == 1


def test_langchain_guard_chain_runs_unchanged_on_remote_guards(
    remote_gen: Qwen3Guard,
    remote_stream: Qwen3StreamGuard,
    guard: Qwen3Guard,
    sguard: Qwen3StreamGuard,
) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from qwen3guard_integrations.langchain import guard_chain

    def chunks(gen: Qwen3Guard, stream: Qwen3StreamGuard, answer: str) -> list[str]:
        model = GenericFakeChatModel(messages=iter([answer]))
        chain = guard_chain(model, guard=gen, stream_guard=stream, on_block="refuse")
        return [str(c.content) for c in chain.stream("Can you help me?")]

    for answer in (RESPONSES[0], SAFE_RESPONSES[2]):
        assert chunks(remote_gen, remote_stream, answer) == chunks(guard, sguard, answer)


def test_serve_cli_refuses_no_model_and_documents_ray(capsys) -> None:  # type: ignore[no-untyped-def]
    from qwen3guard_integrations.cli.main import main

    assert main(["serve", "--port", "1"]) == 2
    assert "--gen-model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--ray" in out and "--auth-token" in out and "--target-sessions" in out
