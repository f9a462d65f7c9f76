"""Analytics and content gaps over seeded conversations whose every figure is known, on SQLite and PostgreSQL.

The week seeded by seed_week (2026-03-01 .. 2026-03-07, plus rows just outside it):

    day  conv  customer msg  handed off (reason)  status now  from queued: taken / resolved (s)  rating
    1    c1    yes           -                    bot         -                                    -
    1    c2    yes           -                    bot         -                                    -
    1    c3    no            -                    bot         -                                    -
    2    c4    yes           request              resolved    60 (claim in the audit log) / 600    5
    2    c5    yes           button               resolved    120 (assigned_at) / 1200             4
    4    c6    yes           abstain              assigned    300 (claim; transferred at 900) / -  -
    4    c7    yes           sentiment            queued      still waiting                        -
    4    c8    yes           request              bot         returned to the bot                  -
    7    c9    yes           safety               resolved    900 / 3000                           2
    7    c10   no            button               assigned    30 / -                               -
    Feb 28 23:59:59 (c11) and Mar 8 00:00:00 (c12) are outside and never counted.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from support_bot.ops import analytics, gaps
from support_bot import handoff
from support_bot.ops.analytics import Table, date_range
from support_bot.core.db import session_scope
from support_bot.core.errors import InvalidInput
from support_bot.models import AuditLog, Conversation, Feedback, Message, SafetyEvent
from tests.web.console_html import ConsolePage
from tests.conftest import add_user
from tests.web.test_console_pages import client_for
from web.app import create_app
from web.api.console_analytics import DAILY_BOTTOM, DAILY_H, DAILY_TOP

START, END = "2026-03-01", "2026-03-07"
RANGE = {"start": START, "end": END}
XSS = "<img src=x onerror=window.__xss=1>"
# Logging in is not what these tests check.
pytestmark = pytest.mark.usefixtures("fast_hashing")


def at(day: int, hour: int = 9, minute: int = 0, second: int = 0, *, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=timezone.utc)


@pytest.fixture
def db(any_db):
    """Every test here runs on SQLite, then on a fresh PostgreSQL database."""
    return any_db


class Seed:
    """Writes conversations, messages, feedback, audit entries and safety events with chosen times."""

    def __init__(self, session):
        self.session = session
        self.n = 0

    def conversation(self, created: datetime, *, reason: str | None = None, status: str = "bot",
                     queued: datetime | None = None, assigned: datetime | None = None,
                     resolved: datetime | None = None, rating: int | None = None) -> Conversation:
        self.n += 1
        conv = Conversation(
            token_hash=f"{self.n:064d}", created_at=created, updated_at=created, handoff_reason=reason, status=status,
            queued_at=queued, assigned_at=assigned, resolved_at=resolved, rating=rating,
        )
        self.session.add(conv)
        self.session.flush()
        return conv

    def message(self, conv: Conversation, role: str, text: str, when: datetime, *, abstained: bool = False,
                reply_to: Message | None = None, link: bool = True) -> Message:
        msg = Message(
            conversation_id=conv.id, role=role, text=text, created_at=when, abstained=abstained,
            reply_to_id=reply_to.id if (reply_to is not None and link) else None,
        )
        self.session.add(msg)
        self.session.flush()
        return msg

    def turn(self, conv: Conversation, question: str, when: datetime, *, abstained: bool = False,
             link: bool = True) -> tuple[Message, Message]:
        asked = self.message(conv, "customer", question, when)
        answer = self.message(conv, "bot", "An answer.", when + timedelta(seconds=2), abstained=abstained,
                              reply_to=asked, link=link)
        return asked, answer

    def feedback(self, msg: Message, rating: str, when: datetime) -> None:
        self.session.add(Feedback(message_id=msg.id, rating=rating, created_at=when))

    def claim(self, conv: Conversation, when: datetime) -> None:
        self.session.add(AuditLog(action="conversation.claim", target_type="conversation", target_id=conv.id,
                                  created_at=when))

    def safety(self, category: str, action: str, when: datetime) -> None:
        self.session.add(SafetyEvent(direction="input", category=category, action=action, created_at=when))


def seed_week(settings) -> None:
    with session_scope(settings) as session:
        s = Seed(session)
        # Day 1: two chats the bot handled alone (a thumbs-up; an abstention with a thumbs-down); one never written in.
        c1 = s.conversation(at(1, 0, 0, 0))
        _, a1 = s.turn(c1, "How long is the warranty?", at(1, 0, 0, 5))
        s.feedback(a1, "up", at(1, 0, 1))
        c2 = s.conversation(at(1, 12))
        _, a2 = s.turn(c2, "Do you sell unicycles?", at(1, 12, 1), abstained=True)
        s.feedback(a2, "down", at(1, 12, 2))
        s.conversation(at(1, 18))
        # Day 2: two handed off and resolved. c4's wait ends at the claim in the audit log.
        q4 = at(2, 10)
        c4 = s.conversation(at(2, 9, 55), reason="request", status="resolved", queued=q4,
                            assigned=q4 + timedelta(seconds=60), resolved=q4 + timedelta(seconds=600), rating=5)
        s.turn(c4, "I want a person", at(2, 9, 59))
        s.claim(c4, q4 + timedelta(seconds=60))
        reply = s.message(c4, "agent", "Hello, I can help.", q4 + timedelta(seconds=90))
        s.feedback(reply, "up", q4 + timedelta(seconds=120))
        q5 = at(2, 14)
        c5 = s.conversation(at(2, 13, 50), reason="button", status="resolved", queued=q5,
                            assigned=q5 + timedelta(seconds=120), resolved=q5 + timedelta(seconds=1200), rating=4)
        _, a5 = s.turn(c5, "Where is my order 1234?", at(2, 13, 51))
        s.feedback(a5, "down", at(2, 13, 55))
        # Day 4: claimed after 300 s then transferred (assigned_at moved to 900 s), one still waiting, one returned.
        q6 = at(4, 8)
        c6 = s.conversation(at(4, 7, 58), reason="abstain", status="assigned", queued=q6,
                            assigned=q6 + timedelta(seconds=900))
        s.turn(c6, "Can you fix a carbon frame?", at(4, 7, 59), abstained=True)
        s.claim(c6, q6 - timedelta(days=1))  # an earlier episode's claim: not this wait's end
        s.claim(c6, q6 + timedelta(seconds=300))
        c7 = s.conversation(at(4, 11), reason="sentiment", status="queued", queued=at(4, 11, 5))
        s.turn(c7, "This is useless!!", at(4, 11, 4))
        c8 = s.conversation(at(4, 16), reason="request", status="bot")
        s.turn(c8, "Let me talk to someone", at(4, 16, 1))
        # Day 7, the range's last second; and a handoff by button before the customer wrote anything.
        q9 = at(7, 23, 0, 0)
        c9 = s.conversation(at(7, 23, 59, 59), reason="safety", status="resolved", queued=q9,
                            assigned=q9 + timedelta(seconds=900), resolved=q9 + timedelta(seconds=3000), rating=2)
        _, a9 = s.turn(c9, "Something unsafe", at(7, 23, 59, 59))
        s.feedback(a9, "down", at(8, 0, 0, 1))  # given after the range: not counted
        s.conversation(at(7, 10), reason="button", status="assigned", queued=at(7, 10, 0, 1), assigned=at(7, 10, 0, 31))
        # Just outside the range on both sides.
        c11 = s.conversation(at(28, 23, 59, 59, month=2), reason="offline", status="resolved",
                             queued=at(28, 23, 59, 59, month=2), assigned=at(1, 1), resolved=at(1, 2), rating=1)
        _, a11 = s.turn(c11, "Anyone there?", at(28, 23, 59, 59, month=2), abstained=True)
        s.feedback(a11, "down", at(28, 23, 59, 59, month=2))
        c12 = s.conversation(at(8, 0, 0, 0))
        s.turn(c12, "Hello?", at(8, 0, 0, 1))
        # Safety events: four in the range, one on each side of it.
        s.safety("prompt_injection", "block", at(1, 5))
        s.safety("prompt_injection", "block", at(7, 23, 59, 59))
        s.safety("prompt_injection", "caution", at(3, 5))
        s.safety("self_harm", "handoff", at(4, 5))
        s.safety("toxicity", "block", at(8, 0, 0, 0))
        s.safety("toxicity", "block", at(28, 23, 59, 59, month=2))


EXPECTED_DAILY = [
    ("2026-03-01", 3, 0), ("2026-03-02", 2, 2), ("2026-03-03", 0, 0), ("2026-03-04", 3, 3),
    ("2026-03-05", 0, 0), ("2026-03-06", 0, 0), ("2026-03-07", 2, 2),
]
# Most frequent first, ties in handoff.REASONS order; every other known reason follows with 0.
EXPECTED_REASONS = [("request", 2), ("button", 2), ("abstain", 1), ("sentiment", 1), ("safety", 1)]


def check_reasons(counts: list[tuple[str, int]]) -> None:
    assert counts[:5] == EXPECTED_REASONS
    assert all(n == 0 for _, n in counts[5:]) and {r for r, _ in counts} == set(handoff.REASONS)


def test_every_figure_matches_the_seeded_week(db):
    seed_week(db)
    with session_scope(db) as session:
        rep = analytics.report(session, date_range(START, END))

    assert [(d.day.isoformat(), d.conversations, d.handed_off) for d in rep.daily] == EXPECTED_DAILY
    # Ten conversations started; eight had a customer message, and of those only c1 and c2 never went to a person.
    assert (rep.deflection.engaged, rep.deflection.deflected, rep.deflection.rate) == (8, 2, 0.25)
    assert (rep.handoffs.conversations, rep.handoffs.handed_off, rep.handoffs.rate) == (10, 7, 0.7)
    check_reasons([(r.reason, r.conversations) for r in rep.handoffs.reasons])
    assert [r.share for r in rep.handoffs.reasons][:3] == [2 / 7, 2 / 7, 1 / 7]
    assert rep.handoffs.reasons[0].label == "Customer asked for a person"
    # Waits 60 (audit claim), 30 (no claim recorded: assigned_at), 120, 300 (claim before the transfer), 900.
    assert (rep.times.waits, rep.times.median_wait_s) == (5, 120.0)
    assert (rep.times.resolutions, rep.times.median_resolution_s) == (3, 1200.0)
    assert rep.times.waiting == 1
    assert (rep.thumbs.up, rep.thumbs.down, rep.thumbs.up_share) == (2, 2, 0.5)
    assert [(r.answered_by, r.up, r.down) for r in rep.thumbs.by_author] == [("bot", 1, 2), ("agent", 1, 0)]
    assert rep.ratings.counts == {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}
    assert rep.ratings.total == 3 and rep.ratings.mean == pytest.approx(11 / 3)
    assert rep.safety.total == 4
    assert rep.safety.by_category == [("prompt_injection", 3), ("self_harm", 1)]
    assert [(r.category, r.action, r.events) for r in rep.safety.rows] == [
        ("prompt_injection", "block", 2), ("prompt_injection", "caution", 1), ("self_harm", "handoff", 1)
    ]


def test_an_even_number_of_waits_takes_the_middle_two(db):
    seed_week(db)
    with session_scope(db) as session:
        # Day 7 alone: c9 waited 900 s and the button chat 30 s.
        times = analytics.handoff_times(session, date_range("2026-03-07", "2026-03-07"))
        assert (times.waits, times.median_wait_s) == (2, 465.0)
        # Only the earlier range: nothing was handed off on day 1.
        empty = analytics.report(session, date_range("2026-03-01", "2026-03-01"))
    assert empty.handoffs.handed_off == 0 and empty.times.median_wait_s is None and empty.ratings.mean is None
    assert empty.deflection.rate == 1.0 and empty.handoffs.rate == 0.0


def test_ranges_are_checked_with_clear_messages():
    today = date(2026, 3, 10)
    assert date_range(None, None, today=today) == analytics.DateRange(date(2026, 2, 9), today)
    assert date_range("", "2026-03-05", default_days=7) == analytics.DateRange(date(2026, 2, 27), date(2026, 3, 5))
    assert date_range("2025-03-05", "2026-03-05").days == 366
    with pytest.raises(InvalidInput, match=r"start \(2026-03-08\) is after the end \(2026-03-07\)"):
        date_range("2026-03-08", "2026-03-07")
    with pytest.raises(InvalidInput, match="367 days long; choose at most 366"):
        date_range("2025-03-04", "2026-03-05")
    with pytest.raises(InvalidInput, match="start: '2026-13-01' is not a date"):
        date_range("2026-13-01", "2026-03-05")


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    table = Table("t", "T", ["=name", "n"], [["=1+1", 1], ["+SUM(A1)", -2], ["-3", 0.5], ["@cmd", None], ["ok", 3]])
    rows = list(csv.reader(io.StringIO(analytics.to_csv(table))))
    assert rows == [["'=name", "n"], ["'=1+1", "1"], ["'+SUM(A1)", "-2"], ["'-3", "0.5"], ["'@cmd", ""], ["ok", "3"]]


# --- over HTTP ---------------------------------------------------------------------------------------------------


@pytest.fixture
def app(db):
    for name, role in (("alice", "agent"), ("olga", "ops"), ("ada", "admin")):
        add_user(db, name, role)
    return create_app(db)


class Charts(ConsolePage):
    """A page's charts: each bar list's (key, length %) and each day's column rectangles."""

    def __init__(self, html: str):
        self.bars: dict[str, list[tuple[str, float]]] = {}
        self.days: list[tuple[dict, dict]] = []
        self.day_titles: list[str] = []
        self._chart: str | None = None
        self._key: str | None = None
        self._in_title = False
        super().__init__(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        cls = a.get("class", "")
        if tag == "ul" and "hbars" in cls:
            self._chart = a["id"]
            self.bars[self._chart] = []
        elif tag == "li" and "bar-row" in cls:
            self._key = a["data-key"]
        elif tag == "rect" and cls == "bar-fill":
            self.bars[self._chart].append((self._key, float(a["width"])))
        elif tag == "rect" and cls == "bar-all":
            self.days.append((a, {}))
        elif tag == "rect" and cls == "bar-handed":
            self.days[-1] = (self.days[-1][0], a)
        elif tag == "title" and self._open and self._open[-1].attrs.get("class") == "day":
            self._in_title = True
            self.day_titles.append("")
        super().handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        super().handle_endtag(tag)

    def handle_data(self, data):
        if self._in_title:
            self.day_titles[-1] += data
        super().handle_data(data)


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_json_report_and_every_csv_export_carry_the_figures(app, db):
    seed_week(db)
    ops, _ = client_for(app, "olga")
    res = ops.get("/api/console/analytics", params=RANGE)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["range"] == {"start": START, "end": END, "days": 7}
    assert [(d["date"], d["conversations"], d["handed_off"]) for d in body["daily"]] == EXPECTED_DAILY
    assert body["deflection"] == {"engaged": 8, "deflected": 2, "rate": 0.25}
    check_reasons([(r["reason"], r["conversations"]) for r in body["handoffs"]["reasons"]])
    assert body["times"]["median_wait_s"] == 120.0 and body["times"]["median_resolution_s"] == 1200.0
    assert body["ratings"]["counts"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}

    expected = {
        "daily": [["date", "conversations", "handed_off"]] + [[d, str(n), str(h)] for d, n, h in EXPECTED_DAILY],
        "reasons": [["reason", "label", "conversations", "share"],
                    ["request", "Customer asked for a person", "2", "0.2857"]],
        "feedback": [["answered_by", "thumbs_up", "thumbs_down", "up_share"],
                     ["bot", "1", "2", "0.3333"], ["agent", "1", "0", "1.0"], ["all", "2", "2", "0.5"]],
        "ratings": [["stars", "conversations", "share"], ["5", "1", "0.3333"], ["4", "1", "0.3333"], ["3", "0", "0.0"],
                    ["2", "1", "0.3333"], ["1", "0", "0.0"]],
        "safety": [["category", "action", "events"], ["prompt_injection", "block", "2"],
                   ["prompt_injection", "caution", "1"], ["self_harm", "handoff", "1"]],
    }
    for name in analytics.TABLES:
        res = ops.get(f"/api/console/analytics/{name}.csv", params=RANGE)
        assert res.status_code == 200, (name, res.text)
        assert res.headers["content-type"].startswith("text/csv")
        assert res.headers["content-disposition"] == f'attachment; filename="analytics-{name}-{START}-{END}.csv"'
        rows = parse_csv(res.text)
        if name in expected:
            want = expected[name]
            assert rows[: len(want)] == want, name
    summary = dict(parse_csv(ops.get("/api/console/analytics/summary.csv", params=RANGE).text)[1:])
    assert summary["deflection rate"] == "0.25" and summary["handoff rate"] == "0.7"
    assert summary["median wait for a person (s)"] == "120.0" and summary["mean rating"] == "3.67"
    assert len(parse_csv(ops.get("/api/console/analytics/reasons.csv", params=RANGE).text)) == 1 + len(handoff.REASONS)


def test_csv_export_defuses_formulas_stored_by_others(app, db):
    with session_scope(db) as session:
        Seed(session).safety('=HYPERLINK("http://evil.example","x")', "block", at(3))
    ops, _ = client_for(app, "olga")
    rows = parse_csv(ops.get("/api/console/analytics/safety.csv", params=RANGE).text)
    assert rows[1] == ["'=HYPERLINK(\"http://evil.example\",\"x\")", "block", "1"]


def test_only_ops_and_admins_see_analytics(app, db):
    paths = [
        "/api/console/analytics", "/api/console/analytics/gaps", "/api/console/analytics/reasons.csv",
        "/api/console/analytics/gaps.csv",
    ]
    pages = ["/console/analytics", "/console/gaps"]
    anonymous, _ = client_for(app, None)
    agent, _ = client_for(app, "alice")
    for path in paths:
        assert anonymous.get(path, params=RANGE).status_code == 401, path
        res = agent.get(path, params=RANGE)
        assert res.status_code == 403 and "ops" in res.json()["detail"], path
    for path in pages:
        res = anonymous.get(path)
        assert res.status_code == 303 and res.headers["location"].startswith("/console/login?next=/console/"), path
        assert agent.get(path).status_code == 403, path
    for name in ("olga", "ada"):
        client, _ = client_for(app, name)
        for path in paths + pages:
            assert client.get(path, params=RANGE).status_code == 200, (name, path)
        page = ConsolePage(client.get("/console/account").text)
        assert {"Analytics", "Content gaps"} <= set(page.nav_labels())
    page = ConsolePage(agent.get("/console/account").text)
    assert "Analytics" not in page.nav_labels()


@pytest.mark.parametrize(
    "params, detail",
    [
        ({"start": "2026-03-08", "end": "2026-03-01"}, "the start (2026-03-08) is after the end (2026-03-01)"),
        ({"start": "2025-01-01", "end": "2026-03-01"}, "the range is 425 days long; choose at most 366 days"),
        ({"start": "yesterday", "end": "2026-03-01"}, "start: 'yesterday' is not a date; use one like 2026-01-31"),
        ({"start": "2026-03-01", "end": "x" * 33}, None),
    ],
)
def test_bad_ranges_are_refused_with_a_clear_reason(app, db, params, detail):
    ops, _ = client_for(app, "olga")
    for path in ("/api/console/analytics", "/api/console/analytics/daily.csv", "/api/console/analytics/gaps"):
        res = ops.get(path, params=params)
        assert res.status_code == 422, (path, res.text)
        assert res.json()["detail"] == detail if detail else "end" in res.json()["detail"]
    if detail:
        for path in ("/console/analytics", "/console/gaps"):
            res = ops.get(path, params=params)
            assert res.status_code == 422
            page = ConsolePage(res.text)
            assert page.text("error") == detail
            # The form keeps what was typed, so it can be corrected.
            assert page.form(form_id=page.forms[-1].attrs["id"]).fields["start"] == params["start"]
            assert "tiles" not in page.by_id and "gap-groups" not in page.by_id


def test_an_unknown_table_is_a_404_that_names_the_tables(app):
    ops, _ = client_for(app, "olga")
    res = ops.get("/api/console/analytics/users.csv", params=RANGE)
    assert res.status_code == 404
    assert "summary, daily, reasons, feedback, ratings, safety, gaps" in res.json()["detail"]


def test_the_page_shows_figures_charts_and_csv_links(app, db):
    seed_week(db)
    ops, _ = client_for(app, "olga")
    res = ops.get("/console/analytics", params=RANGE)
    assert res.status_code == 200
    page = ConsolePage(res.text)
    assert page.form(form_id="analytics-range").fields == {"start": START, "end": END}
    assert page.text("tile-deflection").startswith("Resolved by the bot 25.0%")
    assert page.text("tile-handoff").startswith("Handed to a person 70.0%")
    assert page.text("tile-wait").startswith("Median wait 2 min")
    assert page.text("tile-resolution").startswith("Median resolution 20 min")
    assert page.text("tile-rating").startswith("Mean rating 3.67 / 5")
    rows = {(r.attrs.get("data-key")): r for r in page.rows if r.attrs.get("data-key")}
    assert " ".join(rows["request"].text.split()) == "request Customer asked for a person 2 28.6%"
    # Charts are drawn on the server: one bar per reason, as long as its count relative to the largest.
    charts = Charts(res.text)
    assert charts.bars["chart-reasons"][:6] == [
        ("request", 100.0), ("button", 100.0), ("abstain", 50.0), ("sentiment", 50.0), ("safety", 50.0),
        ("max_turns", 0.0),
    ]
    assert charts.bars["chart-ratings"] == [("5", 100.0), ("4", 100.0), ("3", 0.0), ("2", 100.0), ("1", 0.0)]
    assert charts.bars["chart-safety"] == [("prompt_injection", 100.0), ("self_harm", 33.33)]
    assert "Customer asked for a person 2 (28.6%)" in page.text("chart-reasons")
    # Per day: the column heights follow the counts (3 is the top of a 0..5 axis), handed-off part drawn over it.
    assert page.by_id["chart-daily"].tag == "svg"
    plot = DAILY_H - DAILY_TOP - DAILY_BOTTOM
    counts = [(round(float(a["height"]) * 5 / plot, 3), round(float(h["height"]) * 5 / plot, 3))
              for a, h in charts.days]
    assert counts == [(3, 0), (2, 2), (0, 0), (3, 3), (0, 0), (0, 0), (2, 2)]
    assert charts.day_titles[1] == "2026-03-02: 2 conversations, 2 handed off"
    for name in analytics.TABLES:
        assert page.by_id[f"csv-{name}"].attrs["href"] == f"/api/console/analytics/{name}.csv?start={START}&end={END}"
    assert page.text("still-waiting").startswith("1 handed-off conversation still waiting")


def test_markup_in_stored_text_is_shown_as_text(app, db):
    with session_scope(db) as session:
        Seed(session).safety(XSS, "block", at(3))
    ops, _ = client_for(app, "olga")
    html = ops.get("/console/analytics", params=RANGE).text
    assert XSS not in html and "&lt;img src=x onerror=window.__xss=1&gt;" in html
    assert XSS in ConsolePage(html).text("table-safety")


# --- content gaps ------------------------------------------------------------------------------------------------

PAYPAL = ["Can I pay with PayPal?", "Do you accept PayPal payments?", "Is paying by PayPal possible?"]
RETURNS = ["How do I return a bike?", "Can I send my bicycle back?"]
ALONE = ["What is the airspeed velocity of an unladen swallow?", "Is the store open on Sundays?"]


def seed_gaps(settings) -> None:
    """Questions the bot fell short on, spread over the week, plus some that must not show up."""
    with session_scope(settings) as session:
        s = Seed(session)
        c = s.conversation(at(1))
        s.turn(c, PAYPAL[0], at(1, 10), abstained=True)
        s.turn(c, RETURNS[0], at(2, 10), abstained=True)
        _, a = s.turn(c, ALONE[0], at(3, 10))
        s.feedback(a, "down", at(3, 11))
        c2 = s.conversation(at(4))
        # Stored without reply_to_id: the customer's last message before the reply is the question.
        s.turn(c2, PAYPAL[1], at(4, 10), abstained=True, link=False)
        _, a = s.turn(c2, RETURNS[1], at(5, 10))
        s.feedback(a, "down", at(5, 11))
        s.turn(c2, ALONE[1], at(5, 12), abstained=True)
        s.turn(c2, PAYPAL[2], at(6, 10), abstained=True)
        s.turn(c2, "Can I pay with PayPal?!", at(6, 11), abstained=True)
        # Answered well, or outside the range: not gaps.
        _, a = s.turn(c2, "How long is the warranty?", at(6, 12))
        s.feedback(a, "up", at(6, 13))
        s.turn(c2, "Do you accept PayPal?", at(8, 10), abstained=True)
        s.turn(c2, XSS + " do you ship to Canada?", at(2, 15), abstained=True)


def test_gaps_group_paraphrases_together_and_keep_unrelated_questions_apart(db, embedder):
    seed_gaps(db)
    with session_scope(db) as session:
        report = gaps.content_gaps(session, db, date_range(START, END), embedder=embedder)
    assert report.questions == 9 and not report.truncated
    groups = [{q.text for q in g.examples} for g in report.groups]
    # Newest group first: PayPal (day 6), then the Sunday question (day 5, 12:00), returns (day 5, 10:00), ...
    # "Can I pay with PayPal?!" and PAYPAL[0] are the same words: both count, the newer one is shown.
    assert groups[:3] == [{"Can I pay with PayPal?!", PAYPAL[1], PAYPAL[2]}, {ALONE[1]}, set(RETURNS)]
    assert [g.count for g in report.groups[:3]] == [4, 1, 2]
    paypal = report.groups[0]
    assert (paypal.abstained, paypal.thumbs_down) == (4, 0)
    assert paypal.latest == at(6, 11)
    assert [q.text for q in paypal.examples] == ["Can I pay with PayPal?!", PAYPAL[2], PAYPAL[1]]
    returns = report.groups[2]
    assert (returns.abstained, returns.thumbs_down) == (1, 1)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 2, 3] and sum(g.count for g in report.groups) == 9
    assert {ALONE[0]} in groups and {XSS + " do you ship to Canada?"} in groups
    assert [g.latest for g in report.groups] == sorted((g.latest for g in report.groups), reverse=True)


def test_group_questions_follows_the_threshold_and_example_limit():
    def q(i: int, text: str) -> gaps.GapQuestion:
        return gaps.GapQuestion(f"m{i}", "c", text, at(1, 10, i), abstained=i % 2 == 0, thumbs_down=i % 2 == 1)

    questions = [q(5, "a one"), q(4, "A  one"), q(3, "a two"), q(2, "b one"), q(1, "a three")]
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near = np.array([0.9, np.sqrt(1 - 0.81)])
    vectors = np.stack([a, a, near, b, a]).astype(np.float32)
    groups = gaps.group_questions(questions, vectors, threshold=0.8, max_examples=2)
    assert [g.count for g in groups] == [4, 1]
    assert [q.text for q in groups[0].examples] == ["a one", "a two"]  # "A  one" is the same words, not shown twice
    assert (groups[0].abstained, groups[0].thumbs_down) == (1, 3)
    assert groups[0].latest == at(1, 10, 5) and groups[1].label == "b one"
    # A stricter threshold splits the near one off.
    assert [g.count for g in gaps.group_questions(questions, vectors, threshold=0.95, max_examples=5)] == [3, 1, 1]


def test_gaps_page_api_and_csv(app, db, embedder):
    seed_gaps(db)
    ops, _ = client_for(app, "olga")
    body = ops.get("/api/console/analytics/gaps", params=RANGE).json()
    assert body["questions"] == 9 and body["threshold"] == 0.6
    assert [e["text"] for e in body["groups"][0]["examples"]] == ["Can I pay with PayPal?!", PAYPAL[2], PAYPAL[1]]
    rows = parse_csv(ops.get("/api/console/analytics/gaps.csv", params=RANGE).text)
    assert rows[0] == ["group", "questions", "abstained", "thumbs_down", "latest", "label", "examples"]
    assert rows[1][:4] == ["1", "4", "4", "0"] and len(rows) == 1 + len(body["groups"])
    res = ops.get("/console/gaps", params=RANGE)
    assert res.status_code == 200
    page = ConsolePage(res.text)
    assert page.text("gaps-summary").startswith(f"9 questions in {len(body['groups'])} groups")
    assert XSS not in res.text and XSS in page.text("gap-groups")
    assert page.by_id["csv-gaps"].attrs["href"] == f"/api/console/analytics/gaps.csv?start={START}&end={END}"


def test_gaps_truncate_to_the_newest_questions(db):
    seed_gaps(db)
    with session_scope(db) as session:
        questions, truncated = gaps.gap_questions(session, date_range(START, END), limit=3)
    assert truncated and [q.text for q in questions] == ["Can I pay with PayPal?!", PAYPAL[2], ALONE[1]]


def test_a_range_without_gaps_needs_no_model(app, db):
    ops, _ = client_for(app, "olga")
    page = ConsolePage(ops.get("/console/gaps", params=RANGE).text)
    assert page.text("gaps-empty").startswith("No gaps in this range")
