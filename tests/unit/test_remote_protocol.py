"""The serving backends' wire formats, as pure functions: bodies, answers, errors, retry delays."""

from __future__ import annotations

import email.utils
import math
import time

import pytest

from qwen3guard_integrations import BackendHTTPError, BackendProtocolError, Level
from qwen3guard_integrations.backends.remote.openai import api_base, model_context
from qwen3guard_integrations.backends.remote.protocol import (
    LabelTokens,
    RetryPolicy,
    error_from_body,
    openai_answer,
    openai_body,
    tgi_answer,
    tgi_body,
)
from qwen3guard_integrations.backends.remote.tgi import tgi_limits

LABELS = LabelTokens(
    ids={Level.SAFE: 11, Level.UNSAFE: 22, Level.CONTROVERSIAL: 33},
    texts={Level.SAFE: " Safe", Level.UNSAFE: " Unsafe", Level.CONTROVERSIAL: " Controversial"},
)


def test_tgi_body_is_explicitly_greedy_with_details() -> None:
    body = tgi_body("p", max_new_tokens=64, top_n_tokens=5)
    params = body["parameters"]
    assert body["inputs"] == "p"
    assert params["do_sample"] is False and params["details"] is True
    assert params["max_new_tokens"] == 64 and params["top_n_tokens"] == 5
    assert params["decoder_input_details"] is False and params["return_full_text"] is False


def test_openai_body_is_greedy_and_sends_ids_as_a_list() -> None:
    body = openai_body((1, 2, 3), model="m", max_tokens=8, logprobs=5)
    assert body["prompt"] == [1, 2, 3] and body["temperature"] == 0 and body["logprobs"] == 5
    assert "logprobs" not in openai_body("x", model="m", max_tokens=8, logprobs=0)


def _tok(i: int, text: str, lp: float) -> dict[str, object]:
    return {"id": i, "text": text, "logprob": lp, "special": False}


def test_tgi_answer_scores_from_top_tokens_fast_and_full() -> None:
    top = [_tok(22, " Unsafe", math.log(0.6)), _tok(11, " Safe", math.log(0.2)), _tok(5, "x", -1)]
    fast = {
        "generated_text": " Unsafe\nCategories: Violent",
        "details": {"tokens": [_tok(22, " Unsafe", -0.5)], "top_tokens": [top]},
    }
    a = tgi_answer(fast, head="Safety:", labels=LABELS)
    assert a.text == "Safety: Unsafe\nCategories: Violent"
    assert a.scores is not None
    assert a.scores[Level.UNSAFE] == pytest.approx(0.75) and a.scores[Level.CONTROVERSIAL] == 0
    full = {
        "generated_text": "Safety: Unsafe",
        "details": {
            "tokens": [_tok(1, "Safety", -0.1), _tok(2, ":", -0.1), _tok(22, " Unsafe", -0.5)],
            "top_tokens": [[_tok(1, "Safety", -0.1)], [_tok(2, ":", -0.1)], top],
        },
    }
    b = tgi_answer(full, head="", labels=LABELS)
    assert b.scores == a.scores and b.text == "Safety: Unsafe"
    # no details: text only; a list of one answer is accepted
    assert tgi_answer([{"generated_text": " Safe"}], head="Safety:", labels=LABELS).scores is None


@pytest.mark.parametrize("bad", [None, [], {"generated_text": 3}, {"text": "x"}, "Safety: Safe"])
def test_tgi_answer_rejects_other_shapes(bad: object) -> None:
    with pytest.raises(BackendProtocolError):
        tgi_answer(bad, head="Safety:", labels=LABELS)


def test_openai_answer_scores_by_token_text() -> None:
    data = {
        "choices": [
            {
                "text": " Controversial\nCategories: Unethical Acts",
                "logprobs": {
                    "tokens": [" Controversial"],
                    "top_logprobs": [{" Controversial": math.log(0.5), " Safe": math.log(0.5)}],
                },
            }
        ]
    }
    a = openai_answer(data, head="Safety:", labels=LABELS)
    assert a.scores == {Level.SAFE: 0.5, Level.UNSAFE: 0.0, Level.CONTROVERSIAL: 0.5}
    for bad in ({}, {"choices": []}, {"choices": [{"text": None}]}, [1]):
        with pytest.raises(BackendProtocolError):
            openai_answer(bad, head="Safety:", labels=LABELS)


def test_error_bodies_of_each_server_family() -> None:
    tgi = error_from_body(
        422, b'{"error": "too long", "error_type": "validation"}', backend="tgi", endpoint="u"
    )
    assert isinstance(tgi, BackendHTTPError)
    assert (tgi.status, tgi.error, tgi.error_type) == (422, "too long", "validation")
    oa = error_from_body(
        429,
        b'{"error": {"message": "slow down", "type": "rate_limit"}}',
        backend="openai",
        endpoint="u",
    )
    assert (oa.error, oa.error_type) == ("slow down", "rate_limit")
    vllm = error_from_body(
        404,
        b'{"object": "error", "message": "no model", "type": "NotFound"}',
        backend="openai",
        endpoint="u",
    )
    assert (vllm.error, vllm.error_type) == ("no model", "NotFound")
    raw = error_from_body(502, b"<html>bad gateway</html>", backend="tgi", endpoint="u")
    assert raw.status == 502 and raw.error == "<html>bad gateway</html>" and raw.error_type is None
    assert "HTTP 502" in str(raw)


def test_retry_delay_backoff_and_retry_after() -> None:
    policy = RetryPolicy(max_retries=3, backoff_s=0.25, max_delay_s=2.0)
    assert [policy.delay(k, None) for k in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert policy.delay(0, {"Retry-After": "1.5"}) == 1.5
    assert policy.delay(0, {"retry-after": "3600"}) == 2.0  # bounded
    assert policy.delay(0, {"Retry-After": "-4"}) == 0.0
    date = email.utils.formatdate(time.time() + 1.0, usegmt=True)
    assert 0.0 <= policy.delay(0, {"Retry-After": date}) <= 2.0
    assert policy.delay(1, {"Retry-After": "soon"}) == 0.5  # unreadable: plain backoff


def test_server_limits() -> None:
    assert tgi_limits({"max_input_tokens": 4095, "max_total_tokens": 4096}, 64) == (4032, None)
    assert tgi_limits({"max_input_length": 1000, "max_client_batch_size": 4}, 64) == (1000, 4)
    assert tgi_limits("nope", 64) == (None, None)
    assert model_context({"data": [{"id": "m", "max_model_len": 32768}]}, "m") == 32768
    assert model_context({"data": [{"id": "other"}]}, "m") is None
    assert api_base("http://h:8000") == "http://h:8000/v1"
    assert api_base("http://h:8000/v1/") == "http://h:8000/v1"
    assert api_base("http://h/proxy/openai/v1") == "http://h/proxy/openai/v1"


# --- issue 18: logprobs checked, URLs redacted, headers checked without echo -------------------


@pytest.mark.parametrize("bad", [1000.0, 1e308, float("nan"), float("inf"), "x", None, True])
def test_logprobs_out_of_range_are_protocol_errors(bad: object) -> None:
    with pytest.raises(BackendProtocolError, match="logprob"):
        LABELS.scores_from({11: -0.1, 22: bad}, by="id")


def test_logprobs_normalise_without_overflow_or_underflow() -> None:
    scores = LABELS.scores_from({11: -1e-9, 22: -800.0, 33: float("-inf")}, by="id")
    assert scores is not None and scores[Level.SAFE] == pytest.approx(1.0)
    scores = LABELS.scores_from({11: -1200.0, 22: -1201.0}, by="id")  # exp() underflows to 0
    assert scores is not None and scores[Level.SAFE] > scores[Level.UNSAFE] > 0
    assert LABELS.scores_from({11: float("-inf")}, by="id") is None


def test_urls_are_shown_redacted() -> None:
    from qwen3guard_integrations.backends.remote.secrets import (
        redact_url,
        route,
        scrub,
        url_secrets,
    )

    url = "https://admin:p%40ss@host:8443/v1?api_key=abc123&sig=zzz999#frag"
    shown = redact_url(url)
    assert shown == "https://***@host:8443/v1?api_key=***&sig=***"
    for secret in url_secrets(url):
        assert secret not in shown
    assert scrub(f"failed for {url}", *url_secrets(url)).count("abc123") == 0
    assert (
        route(url, "/completions")
        == "https://admin:p%40ss@host:8443/v1/completions?api_key=abc123&sig=zzz999"
    )
    assert redact_url("http://host:8080") == "http://host:8080"
    assert api_base("http://u:p@h:1?k=v") == "http://u:p@h:1/v1?k=v"


def test_headers_are_checked_and_stripped_without_echo() -> None:
    from qwen3guard_integrations import ConfigurationError
    from qwen3guard_integrations.backends.remote.secrets import check_headers, check_secret

    assert check_headers({" X-Api-Key ": "  v-123\n"}) == {"X-Api-Key": "v-123"}
    assert check_secret("tok-123\n", what="token") == "tok-123"
    for bad in ({"X": "v-123\r\nX-Evil: 1"}, {"X": "v-123\x00"}, {"Bad Name": "v-123"}, {"X": 5}):
        with pytest.raises(ConfigurationError) as err:
            check_headers(bad)  # type: ignore[arg-type]
        assert "v-123" not in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        check_secret("tok-123\nInjected: 1", what="token")
    assert "tok-123" not in str(err.value)
