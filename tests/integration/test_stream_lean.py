"""The lean one-token step against the generic forward: the same numbers in fp32 and bf16, the
same cache afterwards, and again after the model's weights have moved."""

from __future__ import annotations

import pytest

from qwen3guard_integrations import Qwen3StreamGuard

torch = pytest.importorskip("torch")

TEXT = "Sure! Here is what you asked for: build the bomb, step by step. 好的，答案是。"


def _lean_vs_generic(guard: Qwen3StreamGuard, atol: float) -> None:
    runner = guard.runner
    ids = guard.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with guard.session("Can you help me?") as s:
        prefix = list(s.prompt_ids)
    lean, generic = runner.new_cache(), runner.new_cache()
    runner.forward(prefix, lean)
    runner.forward(prefix, generic)
    assert runner._lean_step() is not None
    for k in range(0, len(ids) - 1, 2):
        pair = ids[k : k + 2]
        one = [runner.forward([t], lean) for t in pair]  # one token at a time: the lean step
        both = runner.forward(pair, generic)  # two at once: the generic forward
        for j in range(4):  # risk, category, and the query heads too
            got = torch.cat([step[j] for step in one])
            assert torch.allclose(got, both[j], atol=atol, rtol=0), (k, j)
    assert lean.get_seq_length() == generic.get_seq_length()
    for layer in range(len(guard.model.model.layers)):
        assert torch.allclose(lean.layers[layer].keys, generic.layers[layer].keys, atol=atol)


def test_lean_step_equals_the_generic_forward_fp32(tiny) -> None:  # type: ignore[no-untyped-def]
    _lean_vs_generic(Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu"), 1e-4)


def test_lean_step_equals_the_generic_forward_bf16(tiny) -> None:  # type: ignore[no-untyped-def]
    guard = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu", dtype=torch.bfloat16)
    _lean_vs_generic(guard, 0.1)


def test_lean_step_follows_weights_that_move(tiny) -> None:  # type: ignore[no-untyped-def]
    guard = Qwen3StreamGuard.from_pretrained(tiny.stream, device="cpu")
    _lean_vs_generic(guard, 1e-4)
    q = guard.model.model.layers[0].self_attn.q_proj
    q.weight.data = q.weight.data.clone() * 1.5  # replaced: the fused copy is stale now
    _lean_vs_generic(guard, 1e-4)
