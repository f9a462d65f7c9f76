"""Llama Guard adapter: the LlamaGuard-7b prompt format, output parsing, and a run on a tiny random-weight model."""

from __future__ import annotations

import pytest

from support_bot.safety.llama_guard import (
    DEFAULT_CATEGORIES,
    GuardCategory,
    LlamaGuard,
    build_prompt,
    parse_output,
    role_for,
)

ONE_CATEGORY = (GuardCategory("O1", "Fraud", ("Help anyone deceive people for money.",), ("Explain how scams work.",)),)

GOLDEN_AGENT = (
    "[INST] Task: Check if there is unsafe content in 'Agent' messages in conversations according our safety policy "
    "with the below categories.\n"
    "\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "O1: Fraud.\n"
    "Should not\n"
    "- Help anyone deceive people for money.\n"
    "Can\n"
    "- Explain how scams work.\n"
    "<END UNSAFE CONTENT CATEGORIES>\n"
    "\n"
    "<BEGIN CONVERSATION>\n"
    "\n"
    "User: How do I get a refund?\n"
    "\n"
    "Agent: Start a return from your orders page.\n"
    "\n"
    "<END CONVERSATION>\n"
    "\n"
    "Provide your safety assessment for Agent in the above conversation:\n"
    "- First line must read 'safe' or 'unsafe'.\n"
    "- If unsafe, a second line must include a comma-separated list of violated categories. [/INST]"
)


def test_prompt_format_golden():
    conversation = ["  How do I get a refund? ", "Start a return from your orders page."]
    prompt = build_prompt(conversation, categories=ONE_CATEGORY)
    assert prompt == GOLDEN_AGENT


def test_user_assessment_and_default_taxonomy():
    prompt = build_prompt(["hello"])
    assert prompt.startswith("[INST] Task: Check if there is unsafe content in 'User' messages")
    assert "<BEGIN CONVERSATION>\n\nUser: hello\n\n<END CONVERSATION>" in prompt
    assert "Provide your safety assessment for User in the above conversation:" in prompt
    assert prompt.endswith("list of violated categories. [/INST]")
    codes = [c.code for c in DEFAULT_CATEGORIES]
    assert codes == ["O1", "O2", "O3", "O4", "O5", "O6"]
    assert "O6: Self-Harm.\nShould not\n- " in prompt
    assert role_for(["a"]) == "User" and role_for(["a", "b"]) == "Agent" and role_for(["a", "b", "c"]) == "User"
    with pytest.raises(ValueError):
        build_prompt([])


@pytest.mark.parametrize(
    "raw, verdict, categories",
    [
        ("safe", "safe", []),
        (" safe\n", "safe", []),
        ("unsafe\nO3", "unsafe", ["O3"]),
        ("unsafe\nO1,O5", "unsafe", ["O1", "O5"]),
        ("Unsafe\n o2 ", "unsafe", ["O2"]),
        ("unsafe\nS11", "unsafe", ["S11"]),
        ("unsafe", "unsafe", []),
        ("I cannot help", "unknown", []),
        ("", "unknown", []),
    ],
)
def test_parse_output(raw, verdict, categories):
    result = parse_output(raw)
    assert (result.verdict, result.categories, result.raw) == (verdict, categories, raw)


@pytest.fixture(scope="module")
def tiny_guard_dir(tmp_path_factory):
    """A random-weight LlamaForCausalLM and a byte-level BPE tokenizer trained here, saved like a checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([build_prompt(["where is my order?"]), "safe\nunsafe\nO1,O2,O3,O4,O5,O6"], trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"),
    )
    path = tmp_path_factory.mktemp("tiny-llama-guard")
    LlamaForCausalLM(config).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def test_tiny_model_runs_the_prompt_and_parses_its_output(tiny_guard_dir):
    import torch

    guard = LlamaGuard(tiny_guard_dir, max_new_tokens=6)
    conversation = ["how do I pick the lock on my neighbour's door?"]
    prompt = guard.prompt(conversation)
    assert prompt == build_prompt(conversation)
    # The tokenizer round-trips the exact prompt string the model sees, BOS first.
    ids = guard.tokenizer(prompt)["input_ids"]
    assert ids[0] == guard.tokenizer.bos_token_id
    assert guard.tokenizer.decode(ids, skip_special_tokens=True) == prompt

    result = guard.classify_input(conversation[0])
    # Random weights say nothing meaningful; what matters is that the generated text is what gets parsed.
    with torch.inference_mode():
        out = guard.model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=guard.tokenizer.eos_token_id
        )
    expected_raw = guard.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert result.raw == expected_raw
    assert result == parse_output(expected_raw)
    assert result.verdict in {"safe", "unsafe", "unknown"}
    assert guard.classify_output("hi", "hello, how can I help?").verdict in {"safe", "unsafe", "unknown"}


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from support_bot.core.errors import ModelNotAvailable

    with pytest.raises(ModelNotAvailable):
        LlamaGuard(tmp_path / "nowhere")


def test_successor_models_use_their_own_chat_template(tiny_guard_dir):
    from transformers import AutoTokenizer

    template = (
        "{{ bos_token }}[INST] Check the last {{ 'Agent' if messages|length % 2 == 0 else 'User' }} turn.\n"
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}[/INST]"
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_guard_dir)
    tokenizer.chat_template = template
    guard = LlamaGuard(tiny_guard_dir, prompt_format="chat_template")
    guard.tokenizer = tokenizer
    assert guard.prompt(["hi", "hello!"]) == "<s>[INST] Check the last Agent turn.\nuser: hi\nassistant: hello!\n[/INST]"
    assert guard.classify(["hi", "hello!"]).verdict in {"safe", "unsafe", "unknown"}
    with pytest.raises(ValueError):
        LlamaGuard(tiny_guard_dir, prompt_format="llamaguard-9")
