"""Loading official-format Stream checkpoints strictly, without remote code (real files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwen3guard_integrations import CheckpointError, Qwen3GuardError
from qwen3guard_integrations.core.labels import Category, Level

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

from qwen3guard_integrations.backends.stream.loading import (  # noqa: E402
    StreamLabels,
    load_stream_model,
    resolve_checkpoint,
)
from qwen3guard_integrations.backends.stream.model import HEAD_WEIGHT_NAMES  # noqa: E402


def _copy(tiny, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    dst = tmp_path / "stream"
    shutil.copytree(tiny.stream, dst)
    return dst


def _edit(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    state = st.load_file(str(path / "model.safetensors"))
    fn(state)
    st.save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_official_checkpoint_loads(tiny) -> None:  # type: ignore[no-untyped-def]
    loaded = load_stream_model(tiny.stream)
    keys = set(loaded.model.state_dict())
    assert set(HEAD_WEIGHT_NAMES) <= keys
    assert all(k.startswith("model.") for k in keys - set(HEAD_WEIGHT_NAMES))
    assert loaded.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded.dtype == (torch.bfloat16 if loaded.device.type == "cuda" else torch.float32)
    assert not loaded.model.training
    on_disk = st.load_file(str(tiny.stream / "model.safetensors"))
    for name in HEAD_WEIGHT_NAMES:
        assert torch.equal(loaded.model.state_dict()[name].cpu().float(), on_disk[name].float())
    assert loaded.labels == StreamLabels()  # the tiny config holds SPEC's orders


def test_renamed_key_is_a_typed_error(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    _edit(path, lambda s: s.__setitem__("risk_head.weight", s.pop("risk_level_head.weight")))
    with pytest.raises(CheckpointError) as info:
        load_stream_model(path)
    assert "risk_level_head.weight" in str(info.value) and "risk_head.weight" in str(info.value)
    assert isinstance(info.value, Qwen3GuardError)


def test_extra_key_is_a_typed_error(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    _edit(path, lambda s: s.__setitem__("score.weight", torch.zeros(3, 4)))
    with pytest.raises(CheckpointError, match=r"unexpected 1: \['score.weight'\]"):
        load_stream_model(path)


def test_backbone_key_outside_model_prefix_fails(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    _edit(path, lambda s: s.__setitem__("norm.weight", s.pop("model.norm.weight")))
    with pytest.raises(CheckpointError, match="missing 1"):
        load_stream_model(path)


def test_wrong_shape_is_a_typed_error(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    _edit(path, lambda s: s.__setitem__("risk_level_head.weight", torch.zeros(4, 7)))
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_stream_model(path)


def test_lm_head_is_ignored(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    _edit(path, lambda s: s.__setitem__("lm_head.weight", s["model.embed_tokens.weight"].clone()))
    load_stream_model(path)


def test_sharded_checkpoint_loads_the_same(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    state = st.load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2]}
    shards["model-00002-of-00002.safetensors"] = names[1::2]
    weight_map = {}
    for file, keys in shards.items():
        st.save_file({k: state[k] for k in keys}, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    a = load_stream_model(tiny.stream).model.state_dict()
    b = load_stream_model(path).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_not_found_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        resolve_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError):
        resolve_checkpoint("not a hub id at all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        resolve_checkpoint(tmp_path / "empty")


def test_hub_id_offline_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"Qwen/Qwen3Guard-Stream-0\.6B"):
        resolve_checkpoint("Qwen/Qwen3Guard-Stream-0.6B", cache_dir=str(tmp_path))


def test_label_maps_come_from_config(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _copy(tiny, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["response_risk_level_map"] = {"0": "Safe", "1": "Controversial", "2": "Unsafe"}
    del cfg["query_category_map"]
    (path / "config.json").write_text(json.dumps(cfg))
    labels = load_stream_model(path).labels
    assert labels.risk == (Level.SAFE, Level.CONTROVERSIAL, Level.UNSAFE)
    assert labels.query_category[-1] is Category.JAILBREAK  # fallback order
    cfg["response_category_map"] = {"0": "Violent"}  # disagrees with num_category
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="num_category"):
        load_stream_model(path)
