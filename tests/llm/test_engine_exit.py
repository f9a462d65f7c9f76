"""A process that leaves the local engine writing when it exits still exits cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mid_llama_dir(tmp_path_factory, llama_tokenizer) -> Path:
    """A random Llama big enough (512 wide, 4 layers) that its steps run on torch's worker threads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = llama_tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("models") / "mid-llama-2-chat"
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_process_leaving_while_the_engine_writes_exits_with_status_0(tmp_path, mid_llama_dir):
    # The engine's scheduler thread, still stepping the model at interpreter exit, aborted the process after its
    # work was done ("terminate called without an active exception", status 134): `support-bot eval answers` did,
    # with a summary still being written.
    script = textwrap.dedent(f"""
        import threading, time
        from support_bot.core.config import Settings
        from support_bot.llm.base import ChatMessage
        from support_bot.llm.registry import get_engine

        settings = Settings(data_dir={str(tmp_path / "data")!r}, llm={{
            "backend": "transformers", "model": {str(mid_llama_dir)!r}, "device": "cpu",
        }})
        engine = get_engine(settings)
        started = threading.Event()

        def talk():
            for _ in engine.stream([ChatMessage("user", "Tell me about passwords. " * 30)], max_new_tokens=400):
                started.set()

        threading.Thread(target=talk, daemon=True).start()
        assert started.wait(120)
        print("leaving while it writes", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "leaving while it writes" in done.stdout, done.stderr[-2000:]
    assert "terminate called" not in done.stderr
    assert done.returncode == 0, done.stderr[-2000:]
