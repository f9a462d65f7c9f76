"""The `support-bot tune` and `support-bot adapters` commands (registered by support_bot.cli).

Each runs as an adaptation job in this process, under the same lock as the console's jobs, with progress on stderr
and one JSON object on the last line of stdout. Imported by the CLI at start: everything heavier loads in the commands.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from support_bot.core.config import get_settings
from support_bot.core.errors import ConfigurationError, Conflict, InvalidInput, SupportBotError

# support_bot.adapt.artifacts.KINDS, spelled out so that building the CLI's parser loads nothing of knowledge.
EMBEDDER_KIND = "embedder"
CHAT_KIND = "chat"
KINDS = [EMBEDDER_KIND, CHAT_KIND]
# The held-out figures `adapters list` shows, tuned/live, per kind: (column, figure).
_COLUMNS = {
    EMBEDDER_KIND: [("R@1", "recall@1"), ("R@5", "recall@5"), ("DECISIONS", "decision_accuracy")],
    CHAT_KIND: [("CORRECT", "correct_rate"), ("WRONG", "wrong_rate"), ("WRITTEN", "model_written_rate")],
}


class _Echo:
    """Progress on stderr: a line when the phase changes, then at most one every few seconds."""

    def __init__(self):
        self.phase = None
        self.at = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase or now - self.at >= 5 or done >= total:
            self.phase, self.at = phase, now
            print(f"{phase}: {done}/{total}", file=sys.stderr, flush=True)


class JobFailed(SupportBotError):
    """An adaptation job ended without success; `evaluation` holds a refused activation's figures."""

    def __init__(self, detail: str, evaluation: dict | None):
        super().__init__(detail)
        self.evaluation = evaluation


def run_action(
    settings, action: str, *, target: str | None = None, params: dict | None = None, kind: str = EMBEDDER_KIND
) -> dict:
    """Run one adaptation job here and now; -> its result. A failed job raises JobFailed."""
    from support_bot.adapt import jobs
    from support_bot.core.db import migrate

    migrate(settings)
    created = jobs.create_job(settings, action, target=target, params=params, kind=kind)
    job = jobs.run_job(settings, created["id"], echo=_Echo())
    if job["status"] != "succeeded":
        raise JobFailed(job["error"], (job.get("result") or {}).get("evaluation"))
    return job["result"]


def _refused(exc: JobFailed) -> int:
    """A refused activation: its figures as the JSON line, the reason on stderr."""
    if exc.evaluation:
        print(json.dumps({"error": exc.detail, "evaluation": exc.evaluation}))
    print(f"error: {exc.detail}", file=sys.stderr)
    return 2


def tune_for_eval(settings) -> dict:
    """`eval retrieval --tune`: tune on what was ingested, then activate it if the gate lets it, as ops would."""
    started = time.monotonic()
    record = run_action(settings, "tune")
    evaluation = record["evaluation"]
    summary = {
        "artifact": record["id"], "data": record["data"], "train": record["train"],
        "heldout": {"live": evaluation["live"], "tuned": evaluation["candidate"]}, "verdict": evaluation["verdict"],
    }
    try:
        summary["index_version"] = run_action(settings, "activate", target=record["id"])["index_version"]
        summary["activated"] = True
    except JobFailed as exc:
        summary.update(activated=False, refused=exc.detail)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def eval_chat_model(settings, adapter: str | None) -> str | None:
    """`eval answers [--adapter ID|live]`: what answers, checked before the FAQ is ingested rather than after.

    The configured model must be pulled; with --adapter, a ready chat adapter tuned from it, read from the data
    dir's adapter store (the eval answers from a throw-away data dir, which has none), or "live": the one customers
    are answered with now. -> the adapter's id (None: the configured model as shipped); the choice goes to stderr,
    so that the JSON line stays what EVAL.md says.
    """
    from support_bot.adapt import artifacts
    from support_bot.llm.adapters import live_chat_adapter

    if settings.llm.backend == "transformers":
        from support_bot.llm.pull import resolve_model

        resolve_model(settings)
    if adapter is None:
        return None
    if settings.llm.backend != "transformers":
        raise ConfigurationError(
            f"tuned chat adapters are served by the transformers backend; llm.backend is {settings.llm.backend!r}"
        )
    if adapter == "live":
        adapter = live_chat_adapter(settings)
        if adapter is None:
            print(f"no chat adapter is live: answering with {settings.llm.model} as shipped", file=sys.stderr)
            return None
    elif artifacts.parse_id(adapter) != CHAT_KIND:
        raise InvalidInput(f"--adapter takes a chat adapter ({CHAT_KIND}-NNNN) or live, not {adapter}")
    record = artifacts.load(settings, adapter)
    if record.get("status") != "ready":
        raise Conflict(f"{adapter} is {record.get('status')}, not ready: only a tuned adapter can answer")
    if record.get("base_model") != settings.llm.model:
        raise Conflict(
            f"{adapter} is a tuning of {record.get('base_model')!r}, not of the configured {settings.llm.model!r}"
        )
    print(f"answering with the chat adapter {adapter} (a tuning of {settings.llm.model})", file=sys.stderr)
    return adapter


def _tune(args, params: dict, kind: str, describe, live: Callable[[dict], str]) -> int:
    """Tune one kind of artifact, say the gate's verdict, and with --activate make it live."""
    settings = get_settings()
    record = run_action(settings, "tune", params={k: v for k, v in params.items() if v is not None}, kind=kind)
    print(f"{record['id']}: {describe(record['evaluation']['verdict'])}", file=sys.stderr)
    if args.activate:
        try:
            record["activation"] = run_action(settings, "activate", target=record["id"])
        except JobFailed as exc:
            return _refused(exc)
        print(f"{record['id']} is live{live(record['activation'])}", file=sys.stderr)
    print(json.dumps(record))
    return 0


def cmd_tune_embedder(args) -> int:
    from support_bot.adapt.gate import describe

    params = {"epochs": args.epochs, "max_steps": args.max_steps}
    return _tune(args, params, EMBEDDER_KIND, describe, lambda a: f" (index v{a['index_version']})")


def cmd_tune_chat(args) -> int:
    from support_bot.adapt.chat_gate import describe

    params = {"epochs": args.epochs, "max_steps": args.max_steps, "max_examples": args.max_examples}
    return _tune(args, params, CHAT_KIND, describe, lambda _a: ": the chat model answers with it from the next message")


def cmd_adapters_list(args) -> int:
    from support_bot.adapt.service import list_adapters
    from support_bot.core.db import migrate

    settings = get_settings()
    migrate(settings)
    listing = list_adapters(settings, args.kind)
    if args.json:
        print(json.dumps(listing))
        return 0
    print(f"{args.kind}s (live: {listing['live'] or listing['base_model'] + ' as configured'})", file=sys.stderr)
    if not listing["artifacts"]:
        print(f"no tuned artifacts; make one with `support-bot tune {args.kind}`", file=sys.stderr)
        return 0
    columns = _COLUMNS[args.kind]
    print(f"{'ID':<14}  {'STATUS':<8}  {'LIVE':<4}  " + "".join(f"{c:>11}  " for c, _ in columns) + "CREATED (UTC)")
    for r in listing["artifacts"]:
        ev = r.get("evaluation") or {}
        live, cand = ev.get("live") or {}, ev.get("candidate") or {}

        def pair(metric: str, cand=cand, live=live) -> str:
            return f"{cand[metric]:.2f}/{live[metric]:.2f}" if metric in cand and metric in live else "-"

        mark = "yes" if r.get("live") else ""
        print(f"{r['id']:<14}  {r.get('status', '?'):<8}  {mark:<4}  " + "".join(f"{pair(m):>11}  " for _, m in columns)
              + r.get("created_at", "")[:16].replace("T", " "))
    print("figures: tuned/live on the held-out slice, measured in the same run", file=sys.stderr)
    return 0


def cmd_adapters_activate(args) -> int:
    try:
        result = run_action(get_settings(), "activate", target=args.id)
    except JobFailed as exc:
        return _refused(exc)
    if result.get("kind") == CHAT_KIND:
        print(f"{args.id} is live: the chat model answers with it from the next message", file=sys.stderr)
    else:
        print(f"{args.id} is live from index v{result['index_version']} ({result['chunks']} chunks re-embedded)",
              file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_adapters_rollback(args) -> int:
    result = run_action(get_settings(), "rollback", kind=args.kind)
    back = result["artifact"] or "the configured model"
    if args.kind == CHAT_KIND:
        print(f"{back} is live again: the chat model answers with it from the next message", file=sys.stderr)
    else:
        print(f"{back} is live again from index v{result['index_version']}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def add_commands(sub, command) -> None:
    """Register `tune` and `adapters` on the CLI's subparsers; `command(sub, name, help)` makes one subcommand."""
    tune = command(sub, "tune", help="adapt models to the company's own data").add_subparsers(
        dest="tune_cmd", required=True, metavar="WHAT", help="one of:"
    )
    p = command(tune, "embedder", help="fine-tune the embedder on FAQ entries, resolved chats and helpful answers")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training pairs (default: settings)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many training steps")
    p.add_argument("--activate", action="store_true", help="then make it live if the gate lets it")
    p.set_defaults(func=cmd_tune_embedder)
    p = command(tune, "chat", help="LoRA-tune the chat model on retrieval-augmented examples in its own prompt format")
    p.add_argument("--epochs", type=int, default=None, help="passes over the examples (default: settings)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--max-examples", type=int, default=None, help="train on at most this many questions (0: all)")
    p.add_argument("--activate", action="store_true", help="then make it live if the gate lets it")
    p.set_defaults(func=cmd_tune_chat)

    adapters = command(sub, "adapters", help="list, activate and roll back tuned models").add_subparsers(
        dest="adapters_cmd", required=True, metavar="ACTION", help="one of:"
    )
    p = command(adapters, "list", help="tuned artifacts with their held-out figures against the live model")
    p.add_argument("--kind", choices=KINDS, default=EMBEDDER_KIND, help="which adapters (default: embedder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_adapters_list)
    p = command(adapters, "activate", help="make an artifact live if it is not worse (an embedder re-embeds the KB)")
    p.add_argument("id", help="the artifact, as `support-bot adapters list` shows it")
    p.set_defaults(func=cmd_adapters_activate)
    p = command(adapters, "rollback", help="return to the model live before the current one")
    p.add_argument("--kind", choices=KINDS, default=EMBEDDER_KIND, help="which adapters (default: embedder)")
    p.set_defaults(func=cmd_adapters_rollback)
