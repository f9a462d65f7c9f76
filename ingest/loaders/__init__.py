"""Loaders turn an uploaded file's bytes into entries; one module per format."""

from __future__ import annotations

from pathlib import PurePath

from ingest.loaders.faq_csv import FaqEntry, parse_faq_csv
from support_bot.errors import InvalidInput

# Extension -> (source kind, parser). The kind is stored on the Source and picks the chunker.
LOADERS = {".csv": ("faq_csv", parse_faq_csv)}


def loader_for(filename: str) -> tuple[str, str]:
    """The (kind, extension) for an upload's file name, or InvalidInput naming the supported types."""
    ext = PurePath(filename or "").suffix.lower()
    if ext not in LOADERS:
        supported = ", ".join(sorted(LOADERS))
        raise InvalidInput(
            f"{filename or 'the upload'}: unsupported file type {ext or '(none)'}; supported: {supported}"
        )
    return LOADERS[ext][0], ext


def parse(filename: str, data: bytes) -> list[FaqEntry]:
    """Parse an upload with the loader its extension names."""
    kind, ext = loader_for(filename)
    return LOADERS[ext][1](data, filename=filename)


__all__ = ["FaqEntry", "LOADERS", "loader_for", "parse", "parse_faq_csv"]
