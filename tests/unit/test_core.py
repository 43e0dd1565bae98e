"""Verdict, policy, messages, errors and the optional-dependency helper."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
from pydantic import ValidationError

from qwen3guard_integrations.core import (
    BackendError,
    Category,
    InvalidInputError,
    Level,
    Message,
    MissingDependencyError,
    Policy,
    Qwen3GuardError,
    Role,
    UnsafeContentError,
    Verdict,
    VerdictParseError,
    moderation_role,
    normalize_messages,
    prompt_messages,
    require,
    response_messages,
)


def v(level: Level, *cats: Category, **kw: object) -> Verdict:
    return Verdict(level=level, categories=cats, **kw)  # type: ignore[arg-type]


# --- verdict ---------------------------------------------------------------------------------


def test_verdict_is_frozen_and_round_trips() -> None:
    verdict = v(Level.UNSAFE, Category.VIOLENT, role=Role.PROMPT, scores={Level.UNSAFE: 0.9})
    with pytest.raises(ValidationError):
        verdict.level = Level.SAFE  # type: ignore[misc]
    data = verdict.to_dict()
    assert data["level"] == "Unsafe" and data["categories"] == ["Violent"]
    assert Verdict.from_dict(data) == verdict
    assert verdict.is_unsafe and not verdict.is_safe and not verdict.is_controversial
    assert verdict.has_category("Violent") and verdict.has_category(Category.VIOLENT)
    assert not verdict.has_category("PII")
    with pytest.raises(ValueError):
        verdict.has_category("Violence")
    assert hash(verdict) == hash(Verdict.from_dict(data))


def test_verdict_rejects_bad_fields() -> None:
    with pytest.raises(ValidationError):
        Verdict(level="Dangerous")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Verdict(level=Level.SAFE, scores={Level.SAFE: 1.5})
    with pytest.raises(ValidationError):
        Verdict(level=Level.SAFE, token_index=-1)
    with pytest.raises(ValidationError):
        Verdict(level=Level.SAFE, surprise=True)  # type: ignore[call-arg]


def test_level_order() -> None:
    assert Level.SAFE.severity < Level.CONTROVERSIAL.severity < Level.UNSAFE.severity
    assert Level.worst([Level.SAFE, Level.UNSAFE, Level.CONTROVERSIAL]) is Level.UNSAFE
    assert Level.worst([]) is Level.SAFE
    assert Level.parse(" unsafe ") is Level.UNSAFE
    assert Category.parse("non-violent  illegal acts") is Category.NON_VIOLENT_ILLEGAL_ACTS


# --- policy ----------------------------------------------------------------------------------


def test_strict_and_loose() -> None:
    strict, loose = Policy.strict(), Policy.loose()
    contro = v(Level.CONTROVERSIAL, Category.POLITICALLY_SENSITIVE)
    unsafe = v(Level.UNSAFE, Category.VIOLENT)
    safe = v(Level.SAFE)
    assert Policy() == strict
    assert strict.blocks(contro) and strict.blocks(unsafe) and strict.allows(safe)
    assert loose.allows(contro) and loose.blocks(unsafe) and loose.allows(safe)


def test_category_lists() -> None:
    news = Policy.strict(allow_categories=["Politically Sensitive Topics"])
    assert news.allows(v(Level.CONTROVERSIAL, Category.POLITICALLY_SENSITIVE))
    # one category outside the allow list still blocks
    assert news.blocks(v(Level.UNSAFE, Category.POLITICALLY_SENSITIVE, Category.VIOLENT))
    # no category at all: nothing to allow, so a blocking level blocks
    assert news.blocks(v(Level.UNSAFE))
    deny = Policy.loose(deny_categories=[Category.JAILBREAK])
    assert deny.blocks(v(Level.CONTROVERSIAL, Category.JAILBREAK))
    assert deny.allows(v(Level.CONTROVERSIAL, Category.PII))
    assert deny.allows(v(Level.SAFE, Category.JAILBREAK))  # Safe never blocks


def test_policy_validation() -> None:
    with pytest.raises(ValidationError):
        Policy(block_levels=["Safe"])
    with pytest.raises(ValidationError):
        Policy(allow_categories=["Violence"])
    with pytest.raises(ValidationError):
        Policy(on_error="ignore")  # type: ignore[arg-type]
    assert Policy(block_levels="unsafe").block_levels == frozenset({Level.UNSAFE})


def test_enforce_raises_with_verdict() -> None:
    verdict = v(Level.UNSAFE, Category.VIOLENT)
    with pytest.raises(UnsafeContentError) as info:
        Policy().enforce(verdict)
    assert info.value.verdict is verdict
    assert "Unsafe" in str(info.value) and "Violent" in str(info.value)
    assert Policy().enforce(v(Level.SAFE)).is_safe


def test_fail_open_degraded_verdict() -> None:
    closed, opened = Policy(), Policy(on_error="fail_open")
    err = BackendError("server down", status=503)
    with pytest.raises(ValueError):
        closed.degraded_verdict(err, role=Role.PROMPT)
    d = opened.degraded_verdict(err, role=Role.RESPONSE, backend="tgi", endpoint="http://x")
    assert d.degraded and d.is_safe and opened.allows(d)
    assert d.error is not None and "server down" in d.error and "BackendError" in d.error
    assert d.role is Role.RESPONSE and d.backend == "tgi"


# --- errors ----------------------------------------------------------------------------------


def test_error_tree_and_pickling() -> None:
    verdict = v(Level.UNSAFE, Category.PII)
    errors: list[Qwen3GuardError] = [
        UnsafeContentError(verdict),
        BackendError("boom", status=429, error="busy", error_type="overloaded", backend="tgi"),
        VerdictParseError("bad", raw="Safety: ?"),
        MissingDependencyError("torch", "transformers"),
        InvalidInputError("empty"),
    ]
    for err in errors:
        assert isinstance(err, Qwen3GuardError)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
    assert pickle.loads(pickle.dumps(errors[0])).verdict == verdict  # type: ignore[attr-defined]
    b = pickle.loads(pickle.dumps(errors[1]))
    assert (b.status, b.error, b.error_type, b.backend) == (429, "busy", "overloaded", "tgi")
    assert pickle.loads(pickle.dumps(errors[2])).raw == "Safety: ?"  # type: ignore[attr-defined]
    assert isinstance(errors[3], ImportError) and isinstance(errors[4], ValueError)


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("surely_not_installed_qwen3guard_dep", "llama-index")
    assert 'pip install "qwen3guard-integrations[llama-index]"' in str(info.value)
    assert require("json").dumps([]) == "[]"


def test_import_needs_only_core_dependencies() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top in {'torch', 'transformers', 'langchain', 'langchain_core', 'llama_index',\n"
        "                   'httpx', 'huggingface_hub', 'safetensors', 'tokenizers'}:\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import qwen3guard_integrations as q\n"
        "import qwen3guard_integrations.core, qwen3guard_integrations.backends\n"
        "print(q.Policy().blocks(q.Verdict(level='Unsafe')))\n"
        "from qwen3guard_integrations.core import require\n"
        "try:\n"
        "    require('torch')\n"
        "except q.MissingDependencyError as e:\n"
        "    print(e.extra)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "transformers"]


# --- messages --------------------------------------------------------------------------------


def test_normalize_forms() -> None:
    assert normalize_messages("hi") == [Message(role="user", content="hi")]
    msgs = normalize_messages(
        [
            {"role": "system", "content": "be nice"},
            {"role": "human", "content": [{"type": "text", "text": "a"}, "b"]},
            Message(role="assistant", content="c"),
            {"role": "AI", "content": "d"},
        ]
    )
    assert [(m.role, m.content) for m in msgs] == [
        ("system", "be nice"),
        ("user", "ab"),
        ("assistant", "c"),
        ("assistant", "d"),
    ]
    assert normalize_messages({"role": "user", "content": "x"})[0].content == "x"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "None"),
        ("", "empty"),
        ("   \n", "empty"),
        ([], "empty"),
        (b"bytes", "bytes"),
        (42, "int"),
        ("bad \ud800 surrogate", "surrogate"),
        ([{"role": "wizard", "content": "x"}], "invalid role"),
        ([{"content": "x"}], "'role' and 'content'"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}], "image_url"),
        ([{"role": "user", "content": None}], "NoneType"),
        ([object()], "object"),
    ],
)
def test_normalize_rejects(value: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        normalize_messages(value)  # type: ignore[arg-type]


def test_non_text_blocks_can_be_skipped() -> None:
    content = [{"type": "image_url", "image_url": "u"}, {"type": "text", "text": "caption"}]
    msgs = normalize_messages([{"role": "user", "content": content}], non_text="skip")
    assert msgs[0].content == "caption"


def test_moderation_role() -> None:
    assert moderation_role(normalize_messages("q")) is Role.PROMPT
    convo = normalize_messages(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    )
    assert moderation_role(convo) is Role.RESPONSE
    with pytest.raises(InvalidInputError, match="without a user message"):
        moderation_role(normalize_messages([{"role": "assistant", "content": "a"}]))
    with pytest.raises(InvalidInputError, match="not 'system'"):
        moderation_role(normalize_messages([{"role": "system", "content": "s"}]))
    with pytest.raises(InvalidInputError, match="empty"):
        moderation_role(normalize_messages([{"role": "user", "content": "  "}]))


def test_prompt_and_response_helpers() -> None:
    assert prompt_messages("q")[-1].role == "user"
    with pytest.raises(InvalidInputError):
        prompt_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    r = response_messages("q", "a")
    assert [(m.role, m.content) for m in r] == [("user", "q"), ("assistant", "a")]
    r2 = response_messages(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    )
    assert r2 == r
    with pytest.raises(InvalidInputError):
        response_messages("q")
    with pytest.raises(InvalidInputError, match="empty"):
        response_messages("q", "")


# --- packaging ---------------------------------------------------------------------------------


def test_the_version_is_written_once() -> None:
    import importlib.metadata
    import sys
    from pathlib import Path

    import qwen3guard_integrations

    if sys.version_info >= (3, 11):
        import tomllib

        root = Path(__file__).resolve().parents[2]
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        assert "version" not in project and "version" in project["dynamic"]
        assert "Typing :: Typed" in project["classifiers"]
    installed = importlib.metadata.version("qwen3guard-integrations")
    assert installed == qwen3guard_integrations.__version__
