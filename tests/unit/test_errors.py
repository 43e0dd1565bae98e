"""The error tree as drawn, typed errors for bad options, and misuse that fails fast."""

from __future__ import annotations

import builtins
import inspect
import pickle
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from qwen3guard_integrations.core import errors
from qwen3guard_integrations.core.errors import (
    BackendError,
    BackendHTTPError,
    ConfigurationError,
    InvalidInputError,
    Qwen3GuardError,
    SessionClosedError,
)

# --- the tree ---------------------------------------------------------------------------------


def _drawn_tree() -> list[tuple[int, str, list[str]]]:
    """(depth, class, extra bases) for each class line of the drawing in the module docstring."""
    doc = errors.__doc__ or ""
    block = doc.split("```")[1]
    out = []
    for line in block.splitlines():
        m = re.match(r"^([│ ├└─]*)([A-Z]\w+)(?: \(([\w, ]+)\))?", line)
        if m is None:
            continue
        prefix, name, extra = m.groups()
        out.append((len(prefix) // 4, name, [b.strip() for b in (extra or "").split(",") if b]))
    return out


def test_the_drawn_tree_is_the_class_tree() -> None:
    drawn = _drawn_tree()
    assert sorted(name for _, name, _ in drawn) == sorted(errors.__all__)
    parents: list[str] = []
    for depth, name, extra in drawn:
        cls = getattr(errors, name)
        del parents[depth:]
        if parents:
            assert cls.__bases__[0] is getattr(errors, parents[-1]), name
        else:
            assert cls.__bases__ == (Exception,)
        assert [b.__name__ for b in cls.__bases__[1:]] == extra, name
        assert all(issubclass(cls, getattr(builtins, b)) for b in extra)
        parents.append(name)


def test_session_closed_is_a_state_error_not_bad_input() -> None:
    err = SessionClosedError("closed")
    assert isinstance(err, Qwen3GuardError) and isinstance(err, RuntimeError)
    assert not isinstance(err, InvalidInputError) and not isinstance(err, ValueError)


def test_configuration_error_is_a_value_error_and_an_input_error() -> None:
    assert issubclass(ConfigurationError, InvalidInputError)
    assert issubclass(ConfigurationError, ValueError)


def test_retry_headers_is_a_declared_field_that_pickles() -> None:
    assert BackendError("x").retry_headers is None
    err = BackendHTTPError("busy", status=429, backend="tgi", retry_headers={"retry-after": "2"})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is BackendHTTPError and str(back) == "busy"
    assert back.retry_headers == {"retry-after": "2"} and back.status == 429
    assert "retry_headers" in inspect.signature(BackendError).parameters


# --- bad options are ConfigurationError, at construction ----------------------------------------


def test_bad_options_raise_configuration_error() -> None:
    from qwen3guard_integrations.core.stream_rule import Debouncer, ThinkFilter
    from qwen3guard_integrations.eval.metrics import consecutive_decision
    from qwen3guard_integrations.guards.batcher import MicroBatcher

    with pytest.raises(ConfigurationError, match="debounce"):
        Debouncer(0)
    with pytest.raises(ConfigurationError, match="think"):
        ThinkFilter(1, 2, (), lambda _: False, mode="hide")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_batch"):
        MicroBatcher(lambda xs: xs, max_batch=0)
    with pytest.raises(ConfigurationError, match="max_wait_ms"):
        MicroBatcher(lambda xs: xs, max_wait_ms=-1)
    with pytest.raises(ConfigurationError, match="n must be"):
        consecutive_decision([], n=0)


def test_policy_option_errors_are_validation_errors_not_type_errors() -> None:
    from qwen3guard_integrations.core import Policy

    with pytest.raises(ValidationError, match="block_levels must be a list"):
        Policy(block_levels=5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="categories must be a list"):
        Policy(allow_categories=5)  # type: ignore[arg-type]


def test_mismatched_eval_inputs_are_input_errors() -> None:
    from qwen3guard_integrations.eval.metrics import detection_delay, unsafe_scores

    with pytest.raises(InvalidInputError, match="predictions for"):
        unsafe_scores(["Safe"], [])
    with pytest.raises(InvalidInputError, match="after its end"):
        detection_delay(3, 5, 2)


# --- misuse fails fast -------------------------------------------------------------------------


def test_a_device_that_is_not_there_is_a_configuration_error() -> None:
    torch = pytest.importorskip("torch")
    from qwen3guard_integrations.backends.loading import resolve_device, resolve_dtype

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigurationError, match="is not a device"):
        resolve_device("gpu0")
    with pytest.raises(ConfigurationError, match="unknown dtype"):
        resolve_dtype("float9", torch.device("cpu"))
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ConfigurationError, match=f"has {n} CUDA device"):
            resolve_device(f"cuda:{n}")
    else:
        with pytest.raises(ConfigurationError, match=r"no usable CUDA device.*device='cpu'"):
            resolve_device("cuda")


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from qwen3guard_integrations.backends import loading

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    monkeypatch.setattr(loading, "_PROBE", None)
    yield
    monkeypatch.setattr(loading, "_PROBE", None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hub_probe_reads_the_environment_and_the_network(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qwen3guard_integrations.backends import loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.hub_offline_reason() == "HF_HUB_OFFLINE is set"
    opts: dict[str, object] = {}
    assert loading.hub_options("Qwen/Qwen3Guard-Gen-0.6B", opts) is not None
    assert opts == {"local_files_only": True}
    explicit: dict[str, object] = {"local_files_only": False}
    assert loading.hub_options("Qwen/Qwen3Guard-Gen-0.6B", explicit) is None
    assert explicit == {"local_files_only": False}  # the caller's choice wins
    folder: dict[str, object] = {}
    assert loading.hub_options(str(tmp_path), folder) is None and folder == {}
    monkeypatch.delenv("HF_HUB_OFFLINE")

    with socket.socket() as listener:  # a Hub endpoint that accepts connections
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        assert loading.hub_offline_reason() is None
    monkeypatch.setattr(loading, "_PROBE", None)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    reason = loading.hub_offline_reason()
    assert reason is not None and "cannot be reached" in reason


def test_an_unreachable_hub_id_fails_in_seconds_with_what_to_do(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    from qwen3guard_integrations.backends.loading import load_or_explain
    from qwen3guard_integrations.core.errors import ModelLoadError

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # nothing cached
    assert transformers.AutoTokenizer is not None  # its lazy import is not what is timed
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_or_explain(transformers.AutoTokenizer, "Qwen/Qwen3Guard-Gen-0.6B-xyz", "tokenizer of")
    assert time.perf_counter() - started < 5  # was ~46 s of retried requests
    msg = str(info.value)
    assert "not in the local Hugging Face cache" in msg and "cannot be reached" in msg
    assert "Pass a local folder" in msg


# --- one options object for every Qwen3Guard constructor ----------------------------------------


def test_every_guard_constructor_takes_every_guard_option() -> None:
    import typing

    from qwen3guard_integrations import Qwen3Guard
    from qwen3guard_integrations.guards.options import GuardOptions

    init = inspect.signature(Qwen3Guard.__init__).parameters
    own = {n for n, p in init.items() if p.kind is p.KEYWORD_ONLY}
    assert set(typing.get_type_hints(GuardOptions)) == own
    for factory in (Qwen3Guard.from_pretrained, Qwen3Guard.from_tgi, Qwen3Guard.from_openai):
        params = inspect.signature(factory).parameters
        assert params["options"].kind is inspect.Parameter.VAR_KEYWORD, factory.__name__
        assert not own & set(params), f"{factory.__name__} spells out a shared option"
