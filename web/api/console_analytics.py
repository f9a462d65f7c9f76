"""Console analytics for ops and admins: figures over a date range and content gaps, as pages, JSON and CSV.

The pages are drawn on the server, charts included (inline SVG, no scripts), from the same tables the CSV downloads
carry, so what a person reads and what they export cannot disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from support_bot.ops import analytics, gaps
from support_bot.ops.analytics import DateRange, Report, Table
from support_bot.core.errors import NotFound, SupportBotError
from web.errors import http_status
from web.console_deps import OpsDep, console_page, csrf_protect, no_store, require_roles
from web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["console"], dependencies=[Depends(require_roles("ops")), Depends(csrf_protect)])

Day = Annotated[str, Query(max_length=32, description="a UTC day, YYYY-MM-DD (both ends included)")]
PRESET_DAYS = (7, 30, 90, 365)
# The daily chart's geometry, in SVG user units (the SVG scales to the page's width).
DAILY_W, DAILY_H, DAILY_LEFT, DAILY_TOP, DAILY_BOTTOM = 720, 200, 40, 12, 24


def _range(settings, start: str, end: str) -> DateRange:
    return analytics.date_range(start, end, default_days=settings.analytics.default_days)


def _query(rng: DateRange) -> str:
    return urlencode({"start": rng.start.isoformat(), "end": rng.end.isoformat()})


# --- JSON and CSV ------------------------------------------------------------------------------------------------


@router.get("/api/console/analytics")
def read_analytics(user: OpsDep, session: SessionDep, settings: SettingsDep, start: Day = "", end: Day = ""):
    """Every figure for the range: per day, deflection, handoffs by reason, waits, thumbs, ratings, safety."""
    rng = _range(settings, start, end)
    return analytics.payload(analytics.report(session, rng))


@router.get("/api/console/analytics/gaps")
def read_gaps(user: OpsDep, session: SessionDep, settings: SettingsDep, start: Day = "", end: Day = ""):
    """Questions the bot abstained on or got a thumbs-down for, grouped by meaning, newest group first."""
    rng = _range(settings, start, end)
    return gaps.gaps_payload(gaps.content_gaps(session, settings, rng))


@router.get("/api/console/analytics/{table}.csv")
def read_analytics_csv(
    table: str, user: OpsDep, session: SessionDep, settings: SettingsDep, start: Day = "", end: Day = ""
):
    """One table as a CSV download (summary, daily, reasons, feedback, ratings, safety or gaps)."""
    names = (*analytics.TABLES, "gaps")
    if table not in names:
        raise NotFound(f"there is no analytics table called {table[:40]!r}; choose one of {', '.join(names)}")
    rng = _range(settings, start, end)
    if table == "gaps":
        chosen = gaps.gaps_table(gaps.content_gaps(session, settings, rng))
    else:
        chosen = analytics.tables(analytics.report(session, rng))[table]
    filename = f"analytics-{table}-{rng.start.isoformat()}-{rng.end.isoformat()}.csv"
    response = Response(
        analytics.to_csv(chosen),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    return no_store(response)


# --- what the pages show -----------------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """Seconds as a person reads them: 45 s, 4 min 10 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 // 3600 else f"{s // 86400} d"


def _cell(column: str, value: Any, metric: str = "") -> str:
    """A cell for people: shares as percentages, the summary's seconds as durations, nothing as a dash."""
    if value is None:
        return "—"
    if column == "value" and "(s)" in metric:
        return duration(value)
    is_share = column.endswith("share") or (column == "value" and ("rate" in metric or "share" in metric))
    if isinstance(value, float) and is_share:
        return percent(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _display(table: Table, rng: DateRange) -> dict[str, Any]:
    """A table ready for the template: formatted cells, the first column as each row's key, and its CSV link."""
    rows = []
    for row in table.rows:
        metric = str(row[0]) if table.name == "summary" else ""
        rows.append({"key": str(row[0]), "cells": [_cell(c, v, metric) for c, v in zip(table.columns, row)]})
    return {
        "name": table.name,
        "title": table.title,
        "columns": [c.replace("_", " ") for c in table.columns],
        "rows": rows,
        "csv": f"/api/console/analytics/{table.name}.csv?{_query(rng)}",
    }


def _nice_max(value: int) -> int:
    """The y-axis top: the smallest 1, 2 or 5 x 10^n at or above the largest bar."""
    return next(m * 10**e for e in range(0, 16) for m in (1, 2, 5) if m * 10**e >= value)


def daily_chart(rep: Report) -> dict[str, Any]:
    """Columns per day: all conversations, with the handed-off part drawn over them."""
    plot_w, plot_h = DAILY_W - DAILY_LEFT - 8, DAILY_H - DAILY_TOP - DAILY_BOTTOM
    top = _nice_max(max((d.conversations for d in rep.daily), default=0))
    slot = plot_w / max(len(rep.daily), 1)
    width = max(slot * 0.8, 1.0)
    bars = []
    for i, day in enumerate(rep.daily):
        x = DAILY_LEFT + i * slot + (slot - width) / 2
        h_all = plot_h * day.conversations / top
        h_handed = plot_h * day.handed_off / top
        bars.append(
            {
                "x": round(x, 2), "w": round(width, 2),
                "y": round(DAILY_TOP + plot_h - h_all, 2), "h": round(h_all, 2),
                "hy": round(DAILY_TOP + plot_h - h_handed, 2), "hh": round(h_handed, 2),
                "title": f"{day.day.isoformat()}: {day.conversations} conversations, {day.handed_off} handed off",
            }
        )
    ticks = []
    if rep.daily:
        picks = sorted({0, len(rep.daily) // 2, len(rep.daily) - 1}) if len(rep.daily) > 2 else range(len(rep.daily))
        for i in picks:
            anchor = "start" if i == 0 else "end" if i == len(rep.daily) - 1 else "middle"
            x = DAILY_LEFT + i * slot + (0 if anchor == "start" else slot if anchor == "end" else slot / 2)
            ticks.append({"x": round(x, 2), "label": rep.daily[i].day.isoformat(), "anchor": anchor})
    total = sum(d.conversations for d in rep.daily)
    handed = sum(d.handed_off for d in rep.daily)
    return {
        "w": DAILY_W, "h": DAILY_H, "left": DAILY_LEFT, "top": DAILY_TOP, "bottom": DAILY_TOP + plot_h,
        "right": DAILY_W - 8, "max": top, "bars": bars, "ticks": ticks,
        "label": f"Conversations per day, {rep.range.start} to {rep.range.end}: {total} in all, {handed} handed off",
    }


def bar_chart(name: str, items: list[tuple[str, str, int, str]], *, caption: str) -> dict[str, Any]:
    """Horizontal bars, one per (key, label, count, value text), as a percentage of the largest count."""
    top = max((count for _, _, count, _ in items), default=0) or 1
    rows = [
        {"key": key, "label": label, "text": text, "pct": round(100 * count / top, 2)}
        for key, label, count, text in items
    ]
    return {"name": name, "rows": rows, "label": caption}


def _count_text(count: int, share: float | None) -> str:
    return f"{count} ({percent(share)})" if share is not None else str(count)


def analytics_view(rep: Report) -> dict[str, Any]:
    """Everything analytics.html shows, formatted."""
    d, h, t, th, ra, sa = rep.deflection, rep.handoffs, rep.times, rep.thumbs, rep.ratings, rep.safety
    rng = rep.range
    tiles = [
        ("conversations", "Conversations", str(h.conversations), f"{d.engaged} with a customer message"),
        ("deflection", "Resolved by the bot", percent(d.rate), f"{d.deflected} of {d.engaged} never went to a person"),
        ("handoff", "Handed to a person", percent(h.rate), f"{h.handed_off} of {h.conversations} conversations"),
        ("wait", "Median wait", duration(t.median_wait_s), f"over {t.waits} chats a person took"),
        ("resolution", "Median resolution", duration(t.median_resolution_s), f"over {t.resolutions} resolved chats"),
        ("thumbs", "Thumbs up", percent(th.up_share), f"{th.up} up, {th.down} down"),
        ("rating", "Mean rating", f"{ra.mean:.2f} / 5" if ra.mean is not None else "—", f"{ra.total} ratings"),
        ("safety", "Safety events", str(sa.total), f"{len(sa.by_category)} categories"),
    ]
    charts = {
        "reasons": bar_chart(
            "reasons", [(r.reason, r.label, r.conversations, _count_text(r.conversations, r.share)) for r in h.reasons],
            caption=f"Handoff reasons: {h.handed_off} conversations handed to a person",
        ),
        "feedback": bar_chart(
            "feedback",
            [("up", "Thumbs up", th.up, _count_text(th.up, th.up_share)),
             ("down", "Thumbs down", th.down, _count_text(th.down, None if th.up_share is None else 1 - th.up_share))],
            caption=f"Thumbs: {th.up} up, {th.down} down",
        ),
        "ratings": bar_chart(
            "ratings",
            [
                (str(stars), "★" * stars + "☆" * (5 - stars), n, _count_text(n, n / ra.total if ra.total else None))
                for stars, n in sorted(ra.counts.items(), reverse=True)
            ],
            caption=f"Ratings: {ra.total} in all",
        ),
        "safety": bar_chart(
            "safety", [(category, category, n, str(n)) for category, n in sa.by_category],
            caption=f"Safety events by category: {sa.total} in all",
        ),
    }
    tables = {name: _display(table, rng) for name, table in analytics.tables(rep).items()}
    return {"tiles": tiles, "daily_chart": daily_chart(rep), "charts": charts, "tables": tables,
            "waiting": t.waiting}


def _form(request: Request, rng: DateRange | None, start: str, end: str) -> dict[str, Any]:
    today = datetime.now(timezone.utc).date()
    return {
        "start": rng.start.isoformat() if rng else start,
        "end": rng.end.isoformat() if rng else end,
        "presets": [
            {"days": n, "href": f"{request.url.path}?"
             + urlencode({"start": (today - timedelta(days=n - 1)).isoformat(), "end": today.isoformat()})}
            for n in PRESET_DAYS
        ],
    }


@router.get("/console/analytics", response_class=HTMLResponse)
def read_analytics_page(
    request: Request, user: OpsDep, session: SessionDep, settings: SettingsDep, start: Day = "", end: Day = ""
):
    """Figures and charts for a date range, each table with its CSV download."""
    try:
        rng = _range(settings, start, end)
    except SupportBotError as exc:
        context = {"form": _form(request, None, start, end), "view": None, "error": exc.detail}
        return console_page(request, "console/analytics.html", context, status_code=http_status(exc))
    rep = analytics.report(session, rng)
    context = {"form": _form(request, rng, start, end), "view": analytics_view(rep), "range": rng,
               "query": _query(rng)}
    return console_page(request, "console/analytics.html", context)


@router.get("/console/gaps", response_class=HTMLResponse)
def read_gaps_page(
    request: Request, user: OpsDep, session: SessionDep, settings: SettingsDep, start: Day = "", end: Day = ""
):
    """Content gaps: what customers asked that the knowledge did not answer, grouped by meaning, newest first."""
    try:
        rng = _range(settings, start, end)
        report = gaps.content_gaps(session, settings, rng)
    except SupportBotError as exc:
        context = {"form": _form(request, None, start, end), "report": None, "error": exc.detail}
        return console_page(request, "console/gaps.html", context, status_code=http_status(exc))
    context = {
        "form": _form(request, rng, start, end),
        "report": report,
        "range": rng,
        "csv": f"/api/console/analytics/gaps.csv?{_query(rng)}",
        "limit": settings.analytics.gap_max_questions,
        "when": lambda moment: moment.strftime("%Y-%m-%d %H:%M UTC"),
    }
    return console_page(request, "console/gaps.html", context)
