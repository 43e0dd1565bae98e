"""Tiny, real Qwen3Guard checkpoints for tests (ours and our users' own CI).

``build_tiny_checkpoints()`` computes (no training: the weights are the contract written as a
circuit, `qwen3guard_integrations.testing.circuit`; about 15 seconds on two CPU cores) and caches
two checkpoints in the official on-disk formats:

* ``gen``: a Qwen3Guard-Gen-format checkpoint (``Qwen3ForCausalLM`` config, safetensors weights,
  tokenizer files whose chat template renders exactly what the real Gen template renders);
* ``stream``: a Qwen3Guard-Stream-format checkpoint (a Qwen3 backbone under ``model.`` plus the
  eight head weights, config with ``guard_inner_size``, ``num_*`` and the label maps,
  ``architectures: ["Qwen3ForGuardModel"]``).

Both use the real Qwen3 byte-level BPE (truncated to its first 16,384 ranks, so ordinary tokens
keep their Qwen3 ids) and Qwen3's added tokens. They follow the behaviour contract documented in
`qwen3guard_integrations.testing.contract`. From the shell::

    python -m qwen3guard_integrations.testing DIR      # writes DIR/gen and DIR/stream

`GenTestServer` serves the Gen checkpoint over HTTP on loopback, speaking TGI's and the
OpenAI-compatible routes, and fails on purpose when told to (for testing remote setups).

Needs the ``testing`` extra: ``pip install "qwen3guard-integrations[testing]"``.
"""

from .contract import (
    PROMPT_TRIGGERS,
    RESPONSE_TRIGGERS,
    Expected,
    Trigger,
    expected_prompt,
    expected_response,
    expected_stream_levels,
    is_refusal,
)

__all__ = [
    "PROMPT_TRIGGERS",
    "RESPONSE_TRIGGERS",
    "BuildOptions",
    "Expected",
    "Fault",
    "GenTestServer",
    "TinyCheckpoints",
    "Trigger",
    "build_tiny_checkpoints",
    "expected_prompt",
    "expected_response",
    "expected_stream_levels",
    "is_refusal",
    "qwen3_tokenizer",
]


def __getattr__(name: str) -> object:
    # the builders need torch/transformers: import them only when asked for
    if name in {"BuildOptions", "TinyCheckpoints", "build_tiny_checkpoints"}:
        from . import build

        return getattr(build, name)
    if name in {"Fault", "GenTestServer"}:
        from . import server

        return getattr(server, name)
    if name == "qwen3_tokenizer":
        from .tokenizer import qwen3_tokenizer

        return qwen3_tokenizer
    raise AttributeError(name)
