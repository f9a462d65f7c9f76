"""FAQ CSV loader: header `id,question,answer[,url]`, UTF-8 (BOM allowed), RFC 4180 quoting."""

from __future__ import annotations

import csv
import io
from pathlib import PurePath

from ingest.loaders.base import MAX_ID_CHARS, OPTIONAL, REQUIRED, FaqEntry, decode_text, short
from support_bot.core.errors import InvalidInput

_MAX_REPORTED = 5


def _clean(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()


def parse_faq_csv(data: bytes, *, filename: str = "faq.csv") -> list[FaqEntry]:
    """Parse and validate an FAQ CSV; any problem is an InvalidInput naming the file and what is wrong."""
    name = PurePath(filename).name or "faq.csv"
    text = decode_text(data, name, "CSV text file", save_hint=" (in Excel: 'CSV UTF-8')")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise InvalidInput(f"{name}: malformed CSV on line {reader.line_num}: {exc}") from None

    rows = [(line, row) for line, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InvalidInput(f"{name}: the file is empty")
    header = rows[0][1]
    columns = [c.strip().lstrip("\ufeff").lower() for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        found = ", ".join(repr(short(c)) for c in columns[:8]) + (", …" if len(columns) > 8 else "")
        raise InvalidInput(
            f"{name}: missing column(s) {', '.join(missing)} in the header (found: {found}); "
            f"expected the header {','.join(REQUIRED)}[,{','.join(OPTIONAL)}]"
        )
    dupes = sorted({c for c in columns if c and columns.count(c) > 1})
    if dupes:
        raise InvalidInput(f"{name}: the header repeats column(s) {', '.join(dupes)}")
    if len(rows) == 1:
        raise InvalidInput(f"{name}: the file has a header but no rows")

    pos = {c: columns.index(c) for c in (*REQUIRED, *OPTIONAL) if c in columns}
    errors: list[str] = []
    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    for number, (line, row) in enumerate(rows[1:], 1):
        where = f"row {number} (line {line})"
        if len(row) < len(columns) or any(cell.strip() for cell in row[len(columns) :]):
            errors.append(f"{where} has {len(row)} fields but the header has {len(columns)}")
            continue
        values = {c: _clean(row[i]) for c, i in pos.items()}
        empty = [c for c in REQUIRED if not values[c]]
        if empty:
            errors.append(f"{where} has an empty {' and '.join(empty)}")
            continue
        entry_id = values["id"]
        if len(entry_id) > MAX_ID_CHARS:
            errors.append(f"{where} has an id longer than {MAX_ID_CHARS} characters")
            continue
        if entry_id in seen:
            errors.append(f"{where} repeats id {short(entry_id)!r} first used on line {seen[entry_id]}")
            continue
        seen[entry_id] = line
        url = values.get("url") or None
        # Links are rendered in the widget, so only web links are accepted (no javascript: or data: URLs).
        if url and not url.lower().startswith(("http://", "https://")):
            errors.append(f"{where} has a url that is not an http(s) link: {short(url)!r}")
            continue
        entries.append(FaqEntry(id=entry_id, question=values["question"], answer=values["answer"], url=url, line=line))
    if errors:
        more = f" (and {len(errors) - _MAX_REPORTED} more problems)" if len(errors) > _MAX_REPORTED else ""
        raise InvalidInput(f"{name}: " + "; ".join(errors[:_MAX_REPORTED]) + more)
    return entries
