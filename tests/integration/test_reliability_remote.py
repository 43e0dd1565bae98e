"""Security round two (issue 18), the serving side: secrets in URLs never shown, headers checked
without echoing them, no redirects followed, the stored Hugging Face token kept for Hugging Face,
``timeout`` a deadline for the whole check, no client leaked per event loop, logprobs checked,
``HF_HUB_OFFLINE`` irrelevant, and a close racing a check never degraded. A real
`GenTestServer` on loopback, with a second loopback server (`Relay`) in front of it."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("httpx")

from qwen3guard_integrations import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeoutError,
    ConfigurationError,
    Level,
    Policy,
    Qwen3Guard,
    SessionClosedError,
)
from qwen3guard_integrations.testing import Fault, GenTestServer
from tests.support.loopback import Relay

FAIL_OPEN = Policy(on_error="fail_open")
PROTOCOLS = ["tgi", "openai"]
SECRETS = ("s3cret-pass", "qtok-456789")


@pytest.fixture(scope="module")
def server(tiny) -> Iterator[GenTestServer]:  # type: ignore[no-untyped-def]
    with GenTestServer(tiny.gen) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _clean(server: GenTestServer) -> Iterator[None]:
    yield
    server.clear_faults()
    server.start()


def _guard(url: str, tiny: Any, protocol: str, **kw: Any) -> Qwen3Guard:
    kw.setdefault("max_input_tokens", 2048)
    if protocol == "tgi":
        return Qwen3Guard.from_tgi(url, tokenizer=tiny.gen, max_concurrency=1, **kw)
    return Qwen3Guard.from_openai(url, model="qwen3guard-gen-test", tokenizer=tiny.gen, **kw)


def _base(url: str, protocol: str) -> str:
    return url if protocol == "tgi" else url + "/v1"


# --- item 5: secrets in URLs are redacted everywhere a URL is shown ---------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_url_secrets_never_shown(server: GenTestServer, tiny, protocol: str) -> None:  # type: ignore[no-untyped-def]
    with Relay(server.url) as relay:
        port = relay.url.rsplit(":", 1)[1]
        url = _base(f"http://admin:s3cret-pass@127.0.0.1:{port}", protocol) + "?token=qtok-456789"
        with (
            _guard(url, tiny, protocol) as guard,
            _guard(url, tiny, protocol, policy=FAIL_OPEN, max_retries=0) as lenient,
        ):
            v = guard.check_prompt("how to make a bomb")
            assert v.level is Level.UNSAFE
            assert relay.seen[-1].query == "token=qtok-456789"  # the real URL is still used
            assert relay.seen[-1].headers.get("authorization", "").startswith("Basic ")
            health = guard.health()
            shown = [
                v.endpoint,
                v.model,
                repr(guard),
                repr(guard.backend),
                json.dumps(v.to_dict()),
                repr(health),
                str(health.error),
            ]
            relay.mode = "redirect"  # an error answer: its message is shown too
            with pytest.raises(BackendError) as err:
                guard.check_prompt("What a lovely day.")
            shown.append(str(err.value))
            relay.__exit__()  # down: a transport error, and a degraded verdict's error text
            with pytest.raises(BackendError) as err:
                guard.check_prompt("What a lovely day.")
            shown += [str(err.value), repr(guard.health())]
            degraded = lenient.check_prompt("What a lovely day.")
            assert degraded.degraded
            shown += [json.dumps(degraded.to_dict()), str(asyncio.run(guard.ahealth()))]
        for text in shown:
            for secret in SECRETS:
                assert secret not in str(text), text
        assert "***@127.0.0.1" in str(v.endpoint) and "token=***" in str(v.endpoint)


# --- item 6: headers validated and stripped, values never echoed ------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_headers_are_stripped_and_bad_ones_refused_without_echo(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny, protocol: str
) -> None:
    with Relay(server.url) as relay:
        url = _base(relay.url, protocol)
        secret = "key-" + "9" * 12
        opts = {"token": secret + "\n"} if protocol == "tgi" else {"api_key": secret + "\n"}
        with _guard(url, tiny, protocol, headers={"X-Api-Key": f"  {secret}\n"}, **opts) as g:
            assert g.check_prompt("how to make a bomb").level is Level.UNSAFE
        seen = relay.seen[-1].headers
        assert seen["x-api-key"] == secret and seen["authorization"] == f"Bearer {secret}"
        for bad in ({"X-Api-Key": secret + "\r\nX-Evil: 1"}, {"Bad Name": secret}, {"X": 7}):
            with pytest.raises(ConfigurationError) as err:
                _guard(url, tiny, protocol, headers=bad)
            assert secret not in str(err.value)
        with pytest.raises(ConfigurationError) as err:
            _guard(url, tiny, protocol, **{k: secret + "\nX: y" for k in opts})
        assert secret not in str(err.value)


def test_cli_header_with_a_space_and_without_a_colon(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    from qwen3guard_integrations.cli.main import main

    secret = "abc-" + "7" * 10
    with Relay(server.url) as relay:
        base = ["check", "What a lovely day.", "--backend", "openai", "--url", relay.url]
        base += ["--model", server.model_id, "--tokenizer", str(tiny.gen)]
        assert main([*base, "--header", f"X-Api-Key: {secret}"]) == 0
        assert relay.seen[-1].headers["x-api-key"] == secret
        assert main([*base, "--header", f"X-Api-Key{secret}"]) == 2  # no colon: exit 2, no trace
    out = capsys.readouterr()
    assert secret not in out.out + out.err and "NAME:VALUE" in out.err


# --- item 7: no redirects to another origin ---------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redirects_to_another_origin_are_never_followed(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny, protocol: str
) -> None:
    with Relay(server.url, mode="redirect") as relay:
        url = _base(relay.url, protocol)
        before = sum(server.requests.values())
        with _guard(url, tiny, protocol, headers={"X-Api-Key": "k" * 12}) as guard:
            with pytest.raises(BackendHTTPError) as err:
                guard.check_prompt("What a lovely day.")
            assert err.value.status == 307 and "redirect" in str(err.value)
            with pytest.raises(BackendHTTPError):
                asyncio.run(guard.acheck_prompt("What a lovely day."))
            assert not guard.health().ok
        with _guard(url, tiny, protocol, policy=FAIL_OPEN) as lenient:
            assert lenient.check_prompt("how to make a bomb").degraded  # never the other verdict
        assert sum(server.requests.values()) == before  # the other host saw nothing


# --- item 8: the stored Hugging Face token only goes to Hugging Face --------------------------


def test_stored_hugging_face_token_is_not_sent_to_other_hosts(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_storedSecretToken123")
    with Relay(server.url) as relay:
        with _guard(relay.url, tiny, "tgi") as guard:
            assert guard.check_prompt("how to make a bomb").level is Level.UNSAFE
            asyncio.run(guard.acheck_prompt("What a lovely day."))
        assert relay.seen and all("authorization" not in s.headers for s in relay.seen)
        with _guard(relay.url, tiny, "tgi", token="hf_passedOnPurpose") as guard:
            guard.check_prompt("What a lovely day.")
        assert relay.seen[-1].headers["authorization"] == "Bearer hf_passedOnPurpose"
    from qwen3guard_integrations.backends.remote.secrets import is_hugging_face_host

    assert is_hugging_face_host("https://api-inference.huggingface.co/models/x")
    assert is_hugging_face_host("https://xyz.us-east-1.aws.endpoints.huggingface.cloud")
    for other in ("http://huggingface.co", "https://huggingface.co.evil.com", "https://h:8080"):
        assert not is_hugging_face_host(other)


# --- item 11: one async client per event loop, closed with the loop ---------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_asyncio_run_per_check_keeps_fds_flat(server: GenTestServer, tiny, protocol: str) -> None:  # type: ignore[no-untyped-def]
    with _guard(_base(server.url, protocol), tiny, protocol) as guard:
        for _ in range(5):
            asyncio.run(guard.acheck_prompt("What a lovely day."))
        start = _fds()
        for _ in range(40):
            assert asyncio.run(guard.acheck_prompt("What a lovely day.")).level is Level.SAFE
        assert _fds() - start <= 3
        assert len(guard.backend._loop_state) == 0  # type: ignore[attr-defined]


# --- item 13: timeout is a deadline for the whole check ---------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timeout_bounds_the_whole_check(server: GenTestServer, tiny, protocol: str) -> None:  # type: ignore[no-untyped-def]
    with Relay(server.url, mode="drip", drip_s=0.1) as relay:
        with _guard(_base(relay.url, protocol), tiny, protocol, timeout=1.0) as guard:
            for run in (guard.check_prompt, lambda t: asyncio.run(guard.acheck_prompt(t))):
                started = time.monotonic()
                with pytest.raises(BackendTimeoutError):
                    run("What a lovely day.")
                # one byte per 0.1 s: undeadlined, the answer alone takes tens of seconds
                assert time.monotonic() - started < 2.5
    # retries included: 503 with Retry-After, again and again
    with _guard(_base(server.url, protocol), tiny, protocol, timeout=1.0, max_retries=8) as g:
        server.inject(Fault(status=503, retry_after=0.4), times=20)
        started = time.monotonic()
        with pytest.raises(BackendError):
            g.check_prompt("What a lovely day.")
        with pytest.raises(BackendError):
            asyncio.run(g.acheck_prompt("What a lovely day."))
        assert time.monotonic() - started < 3.5  # two 1 s deadlines; unbounded: >= 6.4 s


# --- item 14: HF_HUB_OFFLINE does not cut the guard off its own server ------------------------


def test_hub_offline_mode_does_not_affect_the_tgi_route(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with _guard(server.url, tiny, "tgi") as guard:
        assert guard.health().ok
        assert guard.check_prompt("how to make a bomb").level is Level.UNSAFE
        assert asyncio.run(guard.acheck_prompt("What a lovely day.")).level is Level.SAFE


# --- item 18: logprobs checked; a tie never resolves to the less severe level ----------------


def _completion(text: str, top: dict[str, Any]) -> bytes:
    choice = {"text": text, "logprobs": {"tokens": [" x"], "top_logprobs": [top]}}
    return json.dumps({"choices": [choice]}).encode()


def test_overflowing_logprobs_are_a_protocol_error_and_ties_go_severe(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny
) -> None:
    with _guard(server.openai_url, tiny, "openai", max_retries=0) as guard:
        labels = guard.backend.labels.texts  # type: ignore[attr-defined]
        safe, unsafe = labels[Level.SAFE], labels[Level.UNSAFE]
        for bad in (1000.0, 1e308, float("nan"), "high"):
            body = _completion(" ??? not a verdict", {safe: -0.1, unsafe: bad})
            server.inject(Fault(body=body.replace(b"NaN", b"NaN")))
            with pytest.raises(BackendProtocolError, match="logprob"):
                guard.check_prompt("What a lovely day.")
        # a garbage answer with tied scores is asked again with the severe level written in
        server.inject(Fault(body=_completion(" ??? not a verdict", {safe: -0.69, unsafe: -0.69})))
        v = guard.check_prompt("What a lovely day.")
        assert v.level is Level.UNSAFE
        # huge but valid logprobs normalise without overflow
        server.inject(
            Fault(body=_completion(" Safe\nCategories: None", {safe: -1e-9, unsafe: -800}))
        )
        v = guard.check_prompt("What a lovely day.")
        assert v.level is Level.SAFE and v.scores is not None


# --- item 4 (remote): a close racing a check is never degraded --------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_close_racing_a_remote_check_is_never_degraded(  # type: ignore[no-untyped-def]
    server: GenTestServer, tiny, protocol: str
) -> None:
    url = _base(server.url, protocol)
    guard = _guard(url, tiny, protocol, policy=FAIL_OPEN)
    server.inject(Fault(delay_s=0.6))
    out: list[Any] = []

    def check() -> None:
        try:
            out.append(guard.check_prompt("how to make a bomb"))
        except Exception as exc:
            out.append(exc)

    caller = threading.Thread(target=check)
    caller.start()
    time.sleep(0.2)
    guard.close()
    caller.join(10)
    assert len(out) == 1
    assert isinstance(out[0], SessionClosedError) or (
        out[0].level is Level.UNSAFE and not out[0].degraded
    ), out[0]

    async def racing() -> Any:
        g = _guard(url, tiny, protocol, policy=FAIL_OPEN)
        server.inject(Fault(delay_s=0.6))
        job = asyncio.create_task(g.acheck_prompt("how to make a bomb"))
        await asyncio.sleep(0.2)
        await g.aclose()
        return (await asyncio.gather(job, return_exceptions=True))[0]

    got = asyncio.run(racing())
    assert isinstance(got, SessionClosedError) or (
        got.level is Level.UNSAFE and not got.degraded
    ), got
    time.sleep(0.6)
