"""The `support-bot` command.

This module is the composition root: it wires the domain core to the web and ingest adapters, so it imports
`web` and `ingest` lazily inside the commands that need them; nothing else in `support_bot` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from support_bot.adapt.commands import add_commands, tune_for_eval
from support_bot.core.config import get_settings
from support_bot.core.errors import SupportBotError
from support_bot.core.logs import configure_logging

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_FAQ = REPO_ROOT / "examples" / "demo-faq.csv"


def _ingest_fn(settings, path: Path) -> None:
    from ingest.pipeline import ingest_path

    job = ingest_path(settings=settings, path=path)
    if job.status != "succeeded":
        raise SupportBotError(f"ingest of {path.name} failed: {job.error}")


def cmd_serve(args) -> int:
    from support_bot.core.db import migrate
    from web.app import create_app
    from web.server import serve

    settings = get_settings()
    configure_logging(settings, verbose=args.verbose)
    migrate(settings)
    announce_first_admin(settings)
    settings = with_own_admin_token(settings)
    if args.seed:
        seed(settings)
    if settings.llm.backend == "transformers":
        from support_bot.llm.pull import resolve_model

        resolve_model(settings)  # fail now, with the command to run, rather than at the first question
    # Migrated above (the seed needs the schema), so the app need not do it again at start-up.
    app = create_app(settings.model_copy(update={"migrate_on_start": False}))
    # A log line, not a print: with JSON logs every line on stderr is one JSON object.
    logging.getLogger("support_bot.cli").info(
        "support-bot serving on http://%s:%s", args.host or settings.host, args.port or settings.port
    )
    log_level = "debug" if args.verbose else settings.log.level.lower()
    serve(app, host=args.host or settings.host, port=args.port or settings.port, log_level=log_level)
    return 0


def seed(settings) -> None:
    """Ingest the demo FAQ once, so a fresh install can answer questions."""
    from sqlalchemy import select

    from support_bot.core.db import session_scope
    from support_bot.models import Source

    with session_scope(settings) as session:
        if session.scalar(select(Source).limit(1)) is not None:
            return
    print(f"Seeding the demo FAQ from {DEMO_FAQ.relative_to(REPO_ROOT)}", file=sys.stderr)
    _ingest_fn(settings, DEMO_FAQ)


def cmd_migrate(_args) -> int:
    from support_bot.core.db import migrate

    settings = get_settings()
    migrate(settings)
    print("database is at the newest schema", file=sys.stderr)
    announce_first_admin(settings)
    return 0


def announce_first_admin(settings) -> None:
    """With no console users yet, create `admin` and print its one-time password (and its file): never logged."""
    from support_bot.ops.auth import FIRST_ADMIN, ensure_first_admin, first_admin_password_path

    password = ensure_first_admin(settings)
    if password is None:
        return
    print(f"Created the first console user '{FIRST_ADMIN}' (role admin) with this one-time password:")
    print(f"    {password}")
    saved = first_admin_password_path(settings)
    if saved.is_file():
        print(f"It is also in {saved} (readable only by you) until {FIRST_ADMIN}'s first login, which deletes it.")
    else:
        print("It is shown only now.")
    print("Log in at /console/login and choose your own password.", flush=True)


def with_own_admin_token(settings):
    """A development server is never left on the published default admin token: it gets its own, printed once."""
    from support_bot.core.security import (
        admin_token_path,
        own_admin_token,
        uses_default_admin_token,
    )

    if not uses_default_admin_token(settings):
        return settings
    token, made = own_admin_token(settings)
    if made:
        print("The admin token of this server, for scripts (Authorization: Bearer <token>):")
        print(f"    {token}")
        saved = admin_token_path(settings)
        if saved.is_file():
            print(f"It is kept in {saved} (readable only by you); SUPPORT_BOT_ADMIN_TOKEN sets your own.")
        else:
            print("It is shown only now and serves until the server stops; SUPPORT_BOT_ADMIN_TOKEN sets one.")
        sys.stdout.flush()
    return settings.model_copy(update={"admin_token": token})


def cmd_models_pull(args) -> int:
    from support_bot.llm.pull import pull_model

    settings = get_settings()
    name = args.name or settings.llm.model
    path = pull_model(name, settings, source=args.source, progress=True)
    print(f"{name}: ready at {path}", file=sys.stderr)
    if args.embeddings or not args.name:
        from support_bot.knowledge.embedder import get_embedder

        embedder = get_embedder(settings)
        print(f"embeddings ({settings.embedding.model}, {embedder.dim}-d): ready", file=sys.stderr)
    return 0


def cmd_models_list(_args) -> int:
    from support_bot.llm.pull import list_models

    rows = list_models(get_settings())
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "installed" if r["installed"] else "-"
        print(f"{r['name']:<{width}}  {mark:<9}  {r['description']}")
    return 0


def cmd_ingest(args) -> int:
    from support_bot.core.db import migrate

    settings = get_settings()
    migrate(settings)
    failed = 0
    for file in args.files:
        from ingest.pipeline import ingest_path

        path = Path(file)
        if not path.is_file():
            print(f"error: {file}: no such file", file=sys.stderr)
            failed += 1
            continue
        try:
            job = ingest_path(settings=settings, path=path, source_name=args.source)
        except SupportBotError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            failed += 1
            continue
        if job.status == "succeeded":
            note = "unchanged (same file as the live version)" if job.unchanged else f"{job.progress_total} chunks"
            print(f"{path.name} -> source '{job.source_name}': {note}", file=sys.stderr)
        else:
            print(f"error: {path.name}: {job.error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_worker(args) -> int:
    settings = get_settings()
    if not settings.redis_url:
        raise SupportBotError(
            "the Celery worker needs Redis: set SUPPORT_BOT_REDIS_URL (without it, `support-bot serve` ingests in-process)"
        )
    from ingest.celery_app import run_worker

    level = "DEBUG" if args.verbose else settings.log.level
    run_worker(
        loglevel=level, concurrency=args.concurrency,
        configure_logging=lambda: configure_logging(settings, verbose=args.verbose),
    )
    return 0


def cmd_eval_retrieval(args) -> int:
    from support_bot.knowledge.evaluation import eval_baseline, eval_retrieval

    settings = get_settings()
    paths = {"faq_path": Path(args.faq), "queries_path": Path(args.queries), "k": args.k, "settings": settings}
    result = eval_retrieval(**paths, ingest=_ingest_fn, tune=tune_for_eval if args.tune else None)
    if args.baseline:
        # The reference measured in the same run, so the comparison holds on a noisy machine.
        result["baseline"] = eval_baseline(**paths)
    print(json.dumps(result))
    return 0


def cmd_eval_answers(args) -> int:
    from support_bot.adapt.commands import eval_chat_model
    from support_bot.chat.evaluation import eval_answers

    settings = get_settings()
    adapter = eval_chat_model(settings, args.adapter)  # fails now, with the reason, not after ingesting the FAQ
    result = eval_answers(
        faq_path=Path(args.faq), queries_path=Path(args.queries), limit=args.limit, seed=args.seed,
        dialogues_path=Path(args.dialogues) if args.dialogues else None, settings=settings, ingest=_ingest_fn,
        progress=True, adapter=adapter, details_path=Path(args.details) if args.details else None,
    )
    print(json.dumps(result))
    return 0


def cmd_learn_backfill(args) -> int:
    from support_bot.core.db import migrate
    from support_bot.learning import backfill

    settings = get_settings()
    migrate(settings)
    report = backfill(settings, limit=args.limit)
    print(json.dumps(report.payload()))
    return 1 if report.failed else 0


def cmd_eval_safety(args) -> int:
    from support_bot.safety.eval import eval_safety

    print(json.dumps(eval_safety(messages_path=Path(args.messages), settings=get_settings())))
    return 0


def cmd_redteam(args) -> int:
    from support_bot.chat.prompt import system_prompt
    from support_bot.safety.redteam import command

    return command(args, settings=get_settings(), system_prompt=system_prompt)


def _jsonable(record) -> dict:
    """A kb dataclass as JSON-ready values (times in ISO 8601)."""
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in vars(record).items()}


def cmd_kb_list(args) -> int:
    from support_bot.core.db import migrate
    from support_bot.knowledge.admin import list_sources

    settings = get_settings()
    migrate(settings)
    rows = list_sources(settings=settings)
    if args.json:
        print(json.dumps([_jsonable(r) for r in rows]))
        return 0
    if not rows:
        print("no knowledge sources; add one with `support-bot ingest FILE`", file=sys.stderr)
        return 0
    width = max(len("NAME"), *(len(r.name) for r in rows))
    print(f"{'NAME':<{width}}  {'KIND':<9}  {'VERSION':>7}  {'ENTRIES':>7}  {'CHUNKS':>6}  UPDATED")
    for r in rows:
        updated = r.updated_at.strftime("%Y-%m-%d %H:%M") if r.updated_at else "-"
        print(f"{r.name:<{width}}  {r.kind:<9}  {r.version:>7}  {r.entries:>7}  {r.chunks:>6}  {updated}")
    return 0


def cmd_kb_show(args) -> int:
    from support_bot.core.db import migrate
    from support_bot.knowledge.admin import show_source

    settings = get_settings()
    migrate(settings)
    info, entries = show_source(settings=settings, name=args.name)
    if args.json:
        print(json.dumps({"source": _jsonable(info), "entries": [_jsonable(e) for e in entries]}))
        return 0
    print(f"{info.name} ({info.kind}, version {info.version}, {info.filename}): ", end="")
    print(f"{info.entries} entries, {info.chunks} chunks")
    for e in entries:
        part = f" [part {e.part + 1}/{e.parts}]" if e.parts > 1 else ""
        print(f"\n[{e.entry_id or '-'}]{part} {e.title or ''}")
        body = e.text.split("\n", 1)[1] if e.title and e.text.startswith(e.title + "\n") else e.text
        print(body if args.full or len(body) <= 300 else body[:299] + "…")
        if e.url:
            print(e.url)
    return 0


def cmd_kb_delete(args) -> int:
    from support_bot.core.db import migrate
    from support_bot.knowledge.admin import delete_source

    settings = get_settings()
    migrate(settings)
    removed = delete_source(settings=settings, name=args.name)
    print(f"deleted source '{args.name}' ({removed} chunks); the index no longer serves it", file=sys.stderr)
    return 0


def cmd_kb_reindex(_args) -> int:
    from support_bot.core.db import migrate
    from support_bot.knowledge.admin import reindex

    settings = get_settings()
    migrate(settings)
    version = reindex(settings=settings)
    print(f"published index version {version}", file=sys.stderr)
    return 0


def cmd_backup(args) -> int:
    from support_bot.ops.backup import backup

    settings = get_settings()
    manifest = backup(settings, Path(args.out), progress=lambda msg: print(msg, file=sys.stderr))
    rows = sum(manifest["tables"].values())
    print(f"backup written to {args.out}: {rows} rows, index v{manifest['index_version']}", file=sys.stderr)
    print(json.dumps(manifest))
    return 0


def cmd_restore(args) -> int:
    from support_bot.ops.backup import restore

    settings = get_settings()
    result = restore(
        settings,
        Path(args.archive),
        force=args.force,
        rebuild_index=args.rebuild_index,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    print(json.dumps(result))
    return 0


def _user_command(fn):
    """Run one change to a console user in a migrated database, recorded in the audit log as the system."""
    from support_bot.core.db import migrate, session_scope

    settings = get_settings()
    migrate(settings)
    with session_scope(settings) as session:
        return fn(session, settings)


def cmd_users_create(args) -> int:
    from support_bot.ops import auth

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")

    def create(session, settings):
        return auth.create_user(
            session, settings=settings, username=args.username, role=args.role, password=password,
            display_name=args.display_name or "", must_change_password=password is None,
        )

    user, one_time = _user_command(create)
    print(f"created {user.role} '{user.username}'", file=sys.stderr)
    if one_time:
        print(f"one-time password (shown only now; it must be changed at the first login): {one_time}")
    return 0


def cmd_users_list(args) -> int:
    from support_bot.ops import auth

    rows = _user_command(lambda session, _settings: [auth.user_payload(u) for u in auth.list_users(session)])
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no console users; `support-bot migrate` creates the first admin", file=sys.stderr)
        return 0
    width = max(len("USERNAME"), *(len(r["username"]) for r in rows))
    print(f"{'USERNAME':<{width}}  {'ROLE':<5}  {'STATUS':<8}  LAST LOGIN        NAME")
    for r in rows:
        status = "disabled" if not r["active"] else "locked" if r["locked"] else "active"
        last = r["last_login_at"][:16].replace("T", " ") if r["last_login_at"] else "never"
        print(f"{r['username']:<{width}}  {r['role']:<5}  {status:<8}  {last:<16}  {r['display_name']}")
    return 0


def cmd_users_disable(args) -> int:
    from support_bot.ops import auth

    _user_command(
        lambda session, _s: auth.set_active(session, user=auth.get_user_by_name(session, args.username), active=False)
    )
    print(f"disabled '{args.username}'; their console sessions have ended", file=sys.stderr)
    return 0


def cmd_users_enable(args) -> int:
    from support_bot.ops import auth

    _user_command(
        lambda session, _s: auth.set_active(session, user=auth.get_user_by_name(session, args.username), active=True)
    )
    print(f"enabled '{args.username}'", file=sys.stderr)
    return 0


def cmd_users_set_role(args) -> int:
    from support_bot.ops import auth

    _user_command(
        lambda session, _s: auth.set_role(session, user=auth.get_user_by_name(session, args.username), role=args.role)
    )
    print(f"'{args.username}' is now {args.role}", file=sys.stderr)
    return 0


def cmd_users_reset_password(args) -> int:
    from support_bot.ops import auth

    password = _user_command(
        lambda session, _s: auth.reset_password(session, user=auth.get_user_by_name(session, args.username))
    )
    print(f"'{args.username}': sessions ended, lockout lifted", file=sys.stderr)
    print(f"one-time password (shown only now; it must be changed at the next login): {password}")
    return 0


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose own --help starts with the line the command list shows for it."""
    return sub.add_parser(name, help=help, description=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="support-bot", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")

    p = _command(sub, "serve", help="run the web app (migrates first)")
    p.add_argument("--host", help="address to listen on (default: SUPPORT_BOT_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default: SUPPORT_BOT_PORT, else 8000)")
    p.add_argument("--seed", action="store_true", help="ingest the demo FAQ if the knowledge base is empty")
    p.set_defaults(func=cmd_serve)

    p = _command(sub, "migrate", help="upgrade the database schema to the newest revision")
    p.set_defaults(func=cmd_migrate)

    models = _command(sub, "models", help="download and list models").add_subparsers(
        dest="models_cmd", required=True, metavar="ACTION", help="one of:"
    )
    p = _command(models, "pull", help="download a model (default: the configured one, plus embeddings)")
    p.add_argument("name", nargs="?", help="a preset from `support-bot models list` (default: the configured model)")
    p.add_argument("--from", dest="source", help="a local HF directory or .gguf file for a Llama-2 preset")
    p.add_argument("--embeddings", action="store_true", help="also check the embedding model")
    p.set_defaults(func=cmd_models_pull)
    p = _command(models, "list", help="list model presets and what is installed")
    p.set_defaults(func=cmd_models_list)

    p = _command(sub, "ingest", help="ingest knowledge files (FAQ CSV/JSON/JSONL, Markdown, HTML, text, chat logs)")
    p.add_argument("files", nargs="+", help="the files to ingest, each as its own source")
    p.add_argument("--source", help="source name (default: the file name without extension)")
    p.set_defaults(func=cmd_ingest)

    kb = _command(sub, "kb", help="manage knowledge sources").add_subparsers(
        dest="kb_cmd", required=True, metavar="ACTION", help="one of:"
    )
    p = _command(kb, "list", help="list sources with version, kind, entry count and last update")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_kb_list)
    p = _command(kb, "show", help="show the entries of a source's live version")
    p.add_argument("name", help="the source's name, as `support-bot kb list` shows it")
    p.add_argument("--full", action="store_true", help="print whole entries, not the first 300 characters")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_kb_show)
    p = _command(kb, "delete", help="delete a source and its chunks, and republish the index")
    p.add_argument("name", help="the source's name, as `support-bot kb list` shows it")
    p.set_defaults(func=cmd_kb_delete)
    p = _command(kb, "reindex", help="rebuild and publish the index from the database")
    p.set_defaults(func=cmd_kb_reindex)

    p = _command(sub, "backup", help="write the database and the live index to one .tar.gz archive")
    p.add_argument("out", help="archive path, e.g. backup-2026-01-31.tar.gz")
    p.set_defaults(func=cmd_backup)
    p = _command(sub, "restore", help="load a backup archive into an empty database and publish its index")
    p.add_argument("archive", help="a .tar.gz written by `support-bot backup`")
    p.add_argument("--force", action="store_true", help="replace the contents of a non-empty database")
    p.add_argument("--rebuild-index", action="store_true", help="rebuild the index from the restored chunks")
    p.set_defaults(func=cmd_restore)

    roles = ("agent", "ops", "admin")
    users = _command(sub, "users", help="manage console users").add_subparsers(
        dest="users_cmd", required=True, metavar="ACTION", help="one of:"
    )
    p = _command(users, "create", help="add a console user (prints a one-time password)")
    p.add_argument("username", help="the login name: letters, digits and . _ @ + -")
    p.add_argument("--role", choices=roles, default="agent", help="what the user may do (default: agent)")
    p.add_argument("--display-name", help="the name agents and customers see (default: the username)")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin instead of generating one"
    )
    p.set_defaults(func=cmd_users_create)
    p = _command(users, "list", help="list console users with role and status")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_users_list)
    p = _command(users, "disable", help="disable a user and end their sessions")
    p.add_argument("username", help="the user to disable")
    p.set_defaults(func=cmd_users_disable)
    p = _command(users, "enable", help="enable a disabled user")
    p.add_argument("username", help="the user to enable")
    p.set_defaults(func=cmd_users_enable)
    p = _command(users, "set-role", help="change a user's role")
    p.add_argument("username", help="the user whose role changes")
    p.add_argument("role", choices=roles, help="the new role")
    p.set_defaults(func=cmd_users_set_role)
    p = _command(users, "reset-password", help="give a user a new one-time password and end their sessions")
    p.add_argument("username", help="the user who gets a new one-time password")
    p.set_defaults(func=cmd_users_reset_password)

    learn = _command(sub, "learn", help="the learning loop: FAQ suggestions from resolved chats").add_subparsers(
        dest="learn_cmd", required=True, metavar="ACTION", help="one of:"
    )
    p = _command(learn, "backfill", help="suggest FAQ entries from resolved conversations that have none yet")
    p.add_argument("--limit", type=int, default=None, help="at most this many conversations (oldest first)")
    p.set_defaults(func=cmd_learn_backfill)

    add_commands(sub, _command)
    p = _command(sub, "worker", help="run a Celery ingest worker (needs SUPPORT_BOT_REDIS_URL)")
    p.add_argument("--concurrency", type=int, default=1, help="ingest jobs run at once (default: 1)")
    p.set_defaults(func=cmd_worker)

    ev = _command(sub, "eval", help="evaluation commands (see EVAL.md)").add_subparsers(
        dest="eval_cmd", required=True, metavar="ACTION", help="one of:"
    )
    p = _command(ev, "retrieval", help="retrieval and abstention quality on an FAQ and labelled queries")
    p.add_argument("--faq", required=True, help="the FAQ file to ingest into a scratch knowledge base")
    p.add_argument("--queries", required=True, help='JSONL of {"query", "relevant": [FAQ ids]}')
    p.add_argument("--k", type=int, default=10, help="how many results to score per query (default: 10)")
    p.add_argument(
        "--baseline",
        action="store_true",
        help='also score plain MiniLM + exact FAISS over the FAQ questions (a "baseline" field, same keys)',
    )
    p.add_argument("--tune", action="store_true", help="first tune the embedder on the FAQ alone (a \"tune\" field)")
    p.set_defaults(func=cmd_eval_retrieval)
    p = _command(ev, "answers", help="whole answers through the chat turn with the configured model")
    p.add_argument("--faq", required=True, help="the FAQ file to ingest into a scratch knowledge base")
    p.add_argument("--queries", required=True, help='JSONL of {"query", "relevant": [FAQ ids]}')
    p.add_argument("--limit", type=int, default=None, help="ask a seeded sample of this many queries")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed")
    p.add_argument(
        "--dialogues", default=None, help='JSONL of {"turns": [..], "relevant": [..]}; each last answer is judged'
    )
    p.add_argument("--adapter", help="answer with this tuned chat adapter (chat-NNNN, or live: the one live now)")
    p.add_argument("--details", help="also write every judged answer (question, reply, verdict) to this JSONL")
    p.set_defaults(func=cmd_eval_answers)
    p = _command(ev, "safety", help="input-guard detection and false-positive rates on labelled messages")
    p.add_argument("--messages", required=True, help='JSONL of {"text", "label": "attack" | "benign"}')
    p.set_defaults(func=cmd_eval_safety)
    p = _command(sub, "redteam", help="send the red-team corpus to a running server's chat API; report leaks")
    p.add_argument("--url", help="the server's base URL (default: SUPPORT_BOT_HOST and SUPPORT_BOT_PORT)")
    p.add_argument("--corpus", default=str(REPO_ROOT / "bench/data/redteam/corpus.jsonl"), help="attacks (JSONL)")
    p.add_argument("--style", action="append", help="only this attack style (repeatable)")
    p.add_argument("--per-style", type=int, help="a seeded sample of at most this many attacks per style")
    p.set_defaults(func=cmd_redteam)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # bm25s logs every index build at DEBUG on its own logger.
    logging.getLogger("bm25s").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except SupportBotError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
