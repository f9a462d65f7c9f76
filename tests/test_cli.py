"""The `support-bot` command: clear one-line errors, never a stack trace."""

from __future__ import annotations

import subprocess
import sys

from support_bot.cli import main


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
    assert "SUPPORT_BOT_SECRET_KEY" in err and "Traceback" not in err


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
