from __future__ import annotations

import random

import pytest

from support_bot.llm.backends.hf.detokenize import REPLACEMENT, IncrementalDecoder

ASCII_CORPUS = [
    "hello there, how are you today? I am fine, thank you!",
    "Open Settings, choose Security and click Reset password.",
    "Invoices are under Billing. The quick brown fox jumps over the lazy dog 0123456789.",
]
# Accents (2 bytes), CJK (3 bytes), emoji (4 bytes, one with a joiner sequence), a dash and plain ASCII mixed.
MIXED = "Grüße aus Köln — 你好，世界! naïve café 😀 👩‍💻 ok.\nZeile zwei: ½ € ✓"


def _byte_level_tokenizer():
    """GPT-2 style byte-level BPE (like SmolLM2's) trained on ASCII only, so every non-ASCII byte is its own token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(ASCII_CORPUS * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def _byte_fallback_tokenizer():
    """Llama-2 style sentencepiece BPE: metaspace words, unknown characters as <0xNN> byte tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for ch in "\u2581" + "".join(sorted(set("".join(ASCII_CORPUS)) - {" "})):
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


TOKENIZERS = {"byte_level": _byte_level_tokenizer, "byte_fallback": _byte_fallback_tokenizer}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


def _pieces(tokenizer, ids: list[int], chunks: list[int]) -> list[str]:
    decoder = IncrementalDecoder(tokenizer)
    pieces, at = [], 0
    for size in chunks:
        pieces.append(decoder.push(ids[at : at + size]))
        at += size
    pieces.append(decoder.push(ids[at:]))
    pieces.append(decoder.flush())
    return pieces


def test_multibyte_characters_split_over_tokens_come_out_whole(tokenizer):
    ids = tokenizer.encode(MIXED, add_special_tokens=False)
    # The fixture really splits characters: there are more tokens than characters outside ASCII would allow.
    assert any(REPLACEMENT in tokenizer.decode([i]) for i in ids)
    pieces = _pieces(tokenizer, ids, [1] * len(ids))
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == MIXED
    assert not any(REPLACEMENT in piece for piece in pieces)
    # Held-back pieces are empty strings, never fragments: every emitted piece is a run of whole characters.
    assert all(MIXED.count(piece) for piece in pieces if piece)


def test_any_chunking_gives_the_same_text(tokenizer):
    ids = tokenizer.encode(MIXED, add_special_tokens=False)
    rng = random.Random(7)
    for _ in range(20):
        chunks = []
        while sum(chunks) < len(ids):
            chunks.append(rng.randint(1, 5))
        pieces = _pieces(tokenizer, ids, chunks)
        assert "".join(pieces) == MIXED
        assert not any(REPLACEMENT in piece for piece in pieces)


def test_an_incomplete_last_character_is_flushed_not_dropped(tokenizer):
    ids = tokenizer.encode("ok 😀", add_special_tokens=False)
    cut = ids[:-1]
    decoder = IncrementalDecoder(tokenizer)
    streamed = "".join(decoder.push([i]) for i in cut)
    assert streamed == "ok "
    tail = decoder.flush()
    assert streamed + tail == tokenizer.decode(cut)
    assert tail.endswith(REPLACEMENT)
    assert decoder.flush() == ""


def test_special_tokens_are_skipped_and_spacing_kept(tokenizer):
    words = tokenizer.encode("hello there", add_special_tokens=False)
    more = tokenizer.encode(" fine, thank you", add_special_tokens=False)
    ids = words + [tokenizer.eos_token_id] + more
    pieces = _pieces(tokenizer, ids, [1] * len(ids))
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(pieces).startswith("hello there")


def test_random_token_sequences_round_trip(tokenizer):
    """Whatever a model emits (even invalid byte runs), the pieces add up to the plain decode of all ids."""
    rng = random.Random(3)
    vocab = len(tokenizer)
    for _ in range(300):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 40))]
        pieces = _pieces(tokenizer, ids, [1] * len(ids))
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_byte_run_is_held_until_it_ends():
    """Sentencepiece decodes a run of byte tokens as a unit: a later invalid byte turns the whole run into U+FFFD."""
    tokenizer = _byte_fallback_tokenizer()
    ids = tokenizer.convert_tokens_to_ids(["<0x6B>", "<s>", "<0x2F>", "<0xA7>", "\u2581", "o", "k"])
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push([i]) for i in ids] + [decoder.flush()]
    # "k" and "/" are valid bytes alone, but nothing may go out until the run (spanning the skipped <s>) is over.
    assert pieces[:4] == ["", "", "", ""]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == REPLACEMENT * 3 + " ok"
