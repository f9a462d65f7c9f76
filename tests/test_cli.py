"""The `support-bot` command: clear one-line errors, never a stack trace."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support_bot.cli import build_parser, main


def test_ingest_of_a_bad_file_names_the_problem(tmp_path, capsys):
    bad = tmp_path / "faq.csv"
    bad.write_bytes(b"question,answer\nq,a\n")
    assert main(["ingest", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "faq.csv" in err and "id" in err and "Traceback" not in err
    assert main(["ingest", str(tmp_path / "missing.csv")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_ingest_then_reingest_changes_nothing(tmp_path, capsys):
    faq = tmp_path / "shop.csv"
    faq.write_text("id,question,answer\n1,Do you sell socks?,\"Yes, wool socks in every size.\"\n", encoding="utf-8")
    assert main(["ingest", str(faq)]) == 0
    assert "1 chunks" in capsys.readouterr().err
    assert main(["ingest", str(faq)]) == 0
    assert "unchanged" in capsys.readouterr().err


def test_production_refuses_default_secrets(monkeypatch, capsys):
    from support_bot.core.config import get_settings

    monkeypatch.setenv("SUPPORT_BOT_ENV", "production")
    get_settings.cache_clear()
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "SUPPORT_BOT_ADMIN_TOKEN" in err and "Traceback" not in err


def test_missing_model_is_one_clear_line(monkeypatch, tmp_path):
    env = {"SUPPORT_BOT_DATA_DIR": str(tmp_path / "d"), "SUPPORT_BOT_LLM__BACKEND": "transformers", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "support_bot.cli", "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "support-bot models pull smollm2-135m-instruct" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_eval_commands_name_a_missing_file(tmp_path, capsys):
    assert main(["eval", "safety", "--messages", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err
    assert main(["eval", "retrieval", "--faq", str(tmp_path / "f.csv"), "--queries", str(tmp_path / "q.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def _command_paths(parser, prefix=()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the parser, as the words that reach it."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += _command_paths(child, (*prefix, name))
    return paths


def _undescribed(help_text: str) -> list[str]:
    """The entries under "positional arguments:" and "options:" that have no description beside or below them."""

    missing, in_section = [], False
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.endswith(":") and not line.startswith(" "):
            in_section = line in ("positional arguments:", "options:", "optional arguments:")
            continue
        # Entries sit at an indent of 2 (options) or 4 (subcommands); argparse puts descriptions further right.
        if not in_section or not re.match(r"^ {2,4}\S", line):
            continue
        beside = re.match(r"^ +\S.*? {2,}\S", line)
        below = i + 1 < len(lines) and re.match(r"^ {8,}\S", lines[i + 1])
        if not (beside or below):
            missing.append(line.strip())
    return missing


def test_every_command_and_option_has_a_description(capsys, monkeypatch):
    # A fixed width, so the check reads the same help layout on every terminal.
    monkeypatch.setenv("COLUMNS", "100")
    paths = _command_paths(build_parser())
    assert ("serve",) in paths and ("users", "reset-password") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert _undescribed(out) == [], path
        if path:
            # The command's own help opens with what it does, not only its options.
            assert out.split("\n\n")[1].strip(), path


def test_make_run_passes_port_and_data_dir_through():
    make = shutil.which("make")
    if make is None:
        pytest.skip("needs make")
    root = Path(__file__).resolve().parent.parent

    def dry_run(*variables: str) -> list[str]:
        # -o install: print the run recipe without (re)installing the virtualenv. Without the caller's PORT,
        # DATA_DIR or a parent make's flags, so "no variables" means none.
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DATA_DIR", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        res = subprocess.run(
            [make, "-n", "-o", "install", "run", *variables], cwd=root, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr
        return [line for line in res.stdout.splitlines() if "support-bot" in line]

    assert dry_run() == [".venv/bin/support-bot models pull", ".venv/bin/support-bot serve --seed"]
    assert dry_run("PORT=8080", "DATA_DIR=/srv/sb data") == [
        "SUPPORT_BOT_DATA_DIR='/srv/sb data' .venv/bin/support-bot models pull",
        "SUPPORT_BOT_DATA_DIR='/srv/sb data' .venv/bin/support-bot serve --seed --port 8080",
    ]
