"""The tiny checkpoints: official on-disk formats, loading through transformers, the cache, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen3guard_integrations.backends.stream.model import HEAD_WEIGHT_NAMES
from qwen3guard_integrations.testing.build import BuildOptions, _cache_key


def test_gen_checkpoint_format(tiny) -> None:  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    gen = Path(tiny.gen)
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (gen / name).is_file(), name
    cfg = json.loads((gen / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert (
        json.loads((gen / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "Qwen2Tokenizer"
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(gen)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    tok = transformers.AutoTokenizer.from_pretrained(gen)
    # ids are read from the tokenizer, never assumed
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id[0] == im_end
    assert cfg["vocab_size"] >= len(tok)
    # the chat template follows the Gen structure, and the mode follows the last message
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "SYS"}, {"role": "user", "content": "hello"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    for marker in (
        "# Task:",
        "<BEGIN SAFETY POLICY>",
        "<BEGIN UNSAFE CONTENT CATEGORIES>",
        "Jailbreak",
        "<BEGIN CONVERSATION>",
        "USER: hello",
        "<END CONVERSATION>",
    ):
        assert marker in prompt, marker
    assert "SYS" not in prompt and "REFUSAL" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    response = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert "<BEGIN REFUSAL POLICY>" in response and "ASSISTANT: yo" in response
    assert "Jailbreak" not in response


def test_stream_checkpoint_format(tiny) -> None:  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    stream = Path(tiny.stream)
    cfg = json.loads((stream / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForGuardModel"] and cfg["model_type"] == "qwen3"
    for key in (
        "guard_inner_size",
        "num_risk_level",
        "num_category",
        "num_query_risk_level",
        "num_query_category",
        "response_risk_level_map",
        "response_category_map",
        "query_risk_level_map",
        "query_category_map",
    ):
        assert key in cfg, key
    assert cfg["response_risk_level_map"] == {"0": "Safe", "1": "Unsafe", "2": "Controversial"}
    assert cfg["query_category_map"]["8"] == "Jailbreak" and cfg["num_query_category"] == 9
    assert cfg["response_category_map"]["6"] == "Non-violent Illegal Acts"
    with safe_open(str(stream / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in HEAD_WEIGHT_NAMES}
    heads = keys - {k for k in keys if k.startswith("model.")}
    assert heads == set(HEAD_WEIGHT_NAMES)  # exactly the SPEC names, no lm_head, no prefix
    g, h = cfg["guard_inner_size"], cfg["hidden_size"]
    assert shapes["risk_level_category_pre.weight"] == (g, h)
    assert shapes["risk_level_category_layernorm.weight"] == (g,)
    assert shapes["risk_level_head.weight"] == (3, g)
    assert shapes["category_head.weight"] == (8, g)
    assert shapes["query_category_head.weight"] == (9, g)
    # the backbone is a plain Qwen3Model under "model."
    backbone = transformers.Qwen3Model(transformers.AutoConfig.from_pretrained(stream))
    assert {f"model.{k}" for k in backbone.state_dict()} == {
        k for k in keys if k.startswith("model.")
    }
    tok = transformers.AutoTokenizer.from_pretrained(stream)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_cache_key_tracks_inputs() -> None:
    base = _cache_key(BuildOptions())
    assert base == _cache_key(BuildOptions())
    assert base != _cache_key(BuildOptions(guard_inner_size=64))


def test_cached_build_is_reused(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from qwen3guard_integrations.testing import build_tiny_checkpoints

    again = build_tiny_checkpoints()
    assert again.gen == tiny.gen
    out = build_tiny_checkpoints(tmp_path / "copy")
    assert (out.gen / "model.safetensors").read_bytes() == (
        Path(tiny.gen) / "model.safetensors"
    ).read_bytes()


def test_module_cli_writes_both(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sys.executable, "-m", "qwen3guard_integrations.testing", str(tmp_path), "--quiet"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert out.stdout.split() == [str(tmp_path / "gen"), str(tmp_path / "stream")]
    assert (tmp_path / "gen" / "model.safetensors").is_file()
    assert (tmp_path / "stream" / "model.safetensors").is_file()


def test_a_checkpoint_that_declares_float32_loads_in_float32_on_a_gpu(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The tiny circuits need float32 (bf16 blurs their large attention scores). The default on a
    # GPU is bf16, as for the real checkpoints; a checkpoint whose config says float32 keeps it.
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig

    from qwen3guard_integrations.backends.loading import resolve_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for folder in (tiny.gen, tiny.stream):
        config = AutoConfig.from_pretrained(folder)
        assert resolve_dtype(None, cuda, config) is torch.float32, folder
        assert resolve_dtype("auto", cuda, config) is torch.float32
        assert resolve_dtype("bf16", cuda, config) is torch.bfloat16  # asked for: given
        assert resolve_dtype(None, cpu, config) is torch.float32
    real = json.loads((Path(tiny.gen) / "config.json").read_text())
    real.pop("torch_dtype", None)
    real["dtype"] = "bfloat16"  # what the real Qwen3Guard configs declare
    (tmp_path / "config.json").write_text(json.dumps(real))
    config = AutoConfig.from_pretrained(tmp_path)
    assert resolve_dtype(None, cuda, config) is torch.bfloat16
    assert resolve_dtype(None, cuda) is torch.bfloat16  # no config: the GPU default
