"""Generation speed: our streaming engine (continuous batching) against plain `model.generate`, same model, same run.

python bench/generation.py [--model NAME | --shape llama-2-7b --random-weights] [--concurrency 1,8,32]
                           [--prompt-tokens 1536] [--new-tokens 128]
  -> {"device", "model", "engine": {"tok_s_c1", "tok_s_c8", ..., "ttft_ms"}, "generate": {...}, ...} (last stdout line)

tok_s_cN: generated tokens per second over all N requests, wall clock from the first request to the last token, with
N requests of --prompt-tokens each (engine: N threads each calling stream; generate: one call at batch N). Decoding
runs the full --new-tokens (end-of-sequence ignored) so both sides produce the same token count.
ttft_ms: time to the first token of one request with the prompt (median of 3).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

from bench._synthetic import faq_rows  # noqa: E402

log = logging.getLogger("bench.generation")

# Llama-2 shapes (hidden, intermediate, layers, heads, kv heads); "tiny" is a quick CPU smoke run.
SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, vocab_size=2048),
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000),
    "llama-2-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                        num_key_value_heads=40, vocab_size=32000),
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=32000),
}  # fmt: skip
CONTEXT_WINDOW = 4096
TTFT_RUNS = 3


def _synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer covering every id of a random-weight model, so streamed ids decode to text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0")


def _random_model(shape: str, device: str, dtype: Any) -> tuple[Any, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=CONTEXT_WINDOW, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    started = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    log.info("built random-weight %s on %s in %.1f s", shape, device, time.perf_counter() - started)
    return _synthetic_tokenizer(config.vocab_size), model


def _real_model(name: str, cache_dir: Path | None, device: str, dtype: Any) -> tuple[Any, Any, Any]:
    from support_bot.core.config import LLMSettings, Settings
    from support_bot.core.errors import ModelNotAvailable
    from support_bot.llm.pull import resolve_model
    from support_bot.llm.weights import load_model

    candidates = [cache_dir] if cache_dir else [None, Path.home() / ".cache" / "support-bot-test"]
    for candidate in candidates:
        settings = Settings(llm=LLMSettings(model=name, cache_dir=candidate))
        try:
            resolved = resolve_model(settings)
        except ModelNotAvailable as exc:
            log.info("%s not in %s: %s", name, settings.model_cache_dir, exc.detail)
            continue
        log.info("loading %s from %s", name, resolved.weights)
        tokenizer, model = load_model(settings, resolved, device=device, dtype=dtype)
        return settings, resolved, (tokenizer, model)
    raise SystemExit(f"model {name} is not pulled; run: support-bot models pull {name}")


def _real_prompts(engine: Any, n: int, length: int) -> list[list[int]]:
    """n different chat prompts of exactly `length` tokens: system header, FAQ sources, then the question."""
    from support_bot.llm.prompt import ChatMessage

    prompts = []
    for i in range(n):
        rows = faq_rows(max(8, length // 40), seed=i)
        sources = "\n".join(f"[{k + 1}] {q} {a}" for k, (_, q, a) in enumerate(rows))
        question = f"{rows[0][1]} Please explain in detail."
        messages = [
            ChatMessage("system", f"You are a support assistant. Answer from these sources:\n{sources}"),
            ChatMessage("user", question),
        ]
        ids = engine.prompt_ids(messages)
        bare = engine.prompt_ids([ChatMessage("system", "You are a support assistant."), messages[1]])
        # The end of the system turn, the question and the answer header: what both renderings end with.
        tail = 0
        while tail < min(len(ids), len(bare)) and ids[-1 - tail] == bare[-1 - tail]:
            tail += 1
        head, body = ids[:8], ids[8 : len(ids) - tail]
        room = length - len(head) - tail
        if room < 0 or len(body) < room:
            raise SystemExit(f"cannot build a {length}-token prompt (the question alone takes {len(head) + tail})")
        prompts.append(head + body[:room] + ids[len(ids) - tail :])
    return prompts


def _random_prompts(vocab_size: int, n: int, length: int) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab_size, (length,), generator=generator).tolist() for _ in range(n)]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _generate_config(engine: Any, new_tokens: int) -> Any:
    config = engine.generation_config(new_tokens)
    # Full-length decoding on both sides: the same token count whatever the (random) weights say.
    config.min_new_tokens = new_tokens
    return config


def bench_generate(
    engine: Any, prompts: list[list[int]], concurrency: list[int], new_tokens: int, worker: ThreadPoolExecutor
) -> dict[str, Any]:
    """Plain `model.generate`: batch N for throughput, batch 1 with one new token for time to first token."""
    import torch

    model, device = engine.model, engine.device
    results: dict[str, Any] = {}

    def run(batch: list[list[int]], n_new: int) -> float:
        # On one long-lived worker thread, like the engine's scheduler: torch's per-thread CPU thread pools then
        # behave the same on both sides (on a busy machine a main-thread run was measured up to 8x slower).
        return worker.submit(timed, batch, n_new).result()

    def timed(batch: list[list[int]], n_new: int) -> float:
        ids = torch.tensor(batch, device=model.device)
        _sync(device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=_generate_config(engine, n_new)
            )
        _sync(device)
        elapsed = time.perf_counter() - started
        assert out.shape[1] - ids.shape[1] == n_new, "generate stopped early"
        return elapsed

    run(prompts[:1], 2)  # warm-up
    for n in concurrency:
        elapsed = run(prompts[:n], new_tokens)
        results[f"tok_s_c{n}"] = round(n * new_tokens / elapsed, 2)
        log.info("generate  c%-3d %.2f tok/s (%.2f s)", n, n * new_tokens / elapsed, elapsed)
    ttft = [run(prompts[:1], 1) for _ in range(TTFT_RUNS)]
    results["ttft_ms"] = round(statistics.median(ttft) * 1000, 1)
    log.info("generate  ttft %.1f ms", results["ttft_ms"])
    return results


def _consume(engine: Any, prompt: list[int], new_tokens: int, errors: list[BaseException]) -> None:
    try:
        for _ in engine.stream_ids(prompt, max_new_tokens=new_tokens, ignore_eos=True):
            pass
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def _concurrent(engine: Any, prompts: list[list[int]], new_tokens: int) -> tuple[float, int]:
    """(seconds, tokens generated) for all prompts streamed at once, one thread each."""
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_consume, args=(engine, p, new_tokens, errors)) for p in prompts]
    before = engine.batcher.stats.tokens
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed, engine.batcher.stats.tokens - before


def bench_engine(engine: Any, prompts: list[list[int]], concurrency: list[int], new_tokens: int) -> dict[str, Any]:
    """Our engine through its streaming API: N concurrent streams, and the first piece of one stream."""
    results: dict[str, Any] = {}
    on_gpu = engine.device.startswith("cuda")
    for n in concurrency:
        # Warm-up at the same concurrency. On a GPU it runs the full length, so that every batch and span bucket the
        # timed run goes through has its decode graph captured beforehand.
        _concurrent(engine, prompts[:n], new_tokens if on_gpu else 4)
        elapsed, tokens = _concurrent(engine, prompts[:n], new_tokens)
        if tokens != n * new_tokens:
            raise RuntimeError(f"engine produced {tokens} tokens, expected {n * new_tokens}")
        results[f"tok_s_c{n}"] = round(tokens / elapsed, 2)
        log.info("engine    c%-3d %.2f tok/s (%.2f s, largest batch %d)", n, tokens / elapsed, elapsed,
                 engine.batcher.stats.largest_batch)  # fmt: skip
    ttft = []
    for _ in range(TTFT_RUNS):
        started = time.perf_counter()
        stream = engine.stream_ids(prompts[0], max_new_tokens=new_tokens, ignore_eos=True)
        next(stream)
        ttft.append(time.perf_counter() - started)
        stream.close()
        # Let the abandoned request leave before the next measurement.
        while engine.batcher.stats.active:
            time.sleep(0.005)
    results["ttft_ms"] = round(statistics.median(ttft) * 1000, 1)
    log.info("engine    ttft %.1f ms", results["ttft_ms"])
    return results


def _keep_best(best: dict[str, Any], run: dict[str, Any]) -> None:
    """Best over repeats (highest tokens/s, lowest latency): on a shared machine, slower runs measure neighbours."""
    for key, value in run.items():
        keep = min if key.endswith("_ms") else max
        best[key] = keep(best[key], value) if key in best else value


def prefill_ms(engine: Any, prompt: list[int], worker: ThreadPoolExecutor) -> float:
    """One bare forward pass over the prompt (the floor for time to first token)."""
    import torch

    ids = torch.tensor([prompt], device=engine.model.device)

    def timed() -> float:
        with torch.inference_mode():
            _sync(engine.device)
            started = time.perf_counter()
            engine.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            _sync(engine.device)
            return time.perf_counter() - started

    times = [worker.submit(timed).result() for _ in range(TTFT_RUNS + 1)]
    return round(statistics.median(times[1:]) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a preset name, HF directory or .gguf file (default smollm2-135m-instruct)")
    source.add_argument("--shape", choices=sorted(SHAPES), help="a random-weight model of this shape")
    parser.add_argument("--random-weights", action="store_true", help="required with --shape (no checkpoint)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated request counts")
    parser.add_argument("--prompt-tokens", type=int, default=1536)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16")
    parser.add_argument("--cache-dir", type=Path, help="model cache of --model (default: settings, then test cache)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate both sides this often; keep the best")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.shape and not args.random_weights:
        parser.error("--shape needs --random-weights")
    concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from support_bot.core.config import LLMSettings, Settings
    from support_bot.llm.pull import ResolvedModel
    from support_bot.llm.backends.hf.engine import TransformersEngine, pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if args.shape:
        tokenizer, model = _random_model(args.shape, "cuda:0" if device == "cuda" else device, dtype)
        label = f"{args.shape} (random weights)"
        settings = Settings(llm=LLMSettings(temperature=0.0))
        resolved = ResolvedModel(args.shape, Path("."), None, "template", CONTEXT_WINDOW)
    else:
        name = args.model or "smollm2-135m-instruct"
        settings, resolved, (tokenizer, model) = _real_model(name, args.cache_dir, device, dtype)
        settings.llm.temperature = 0.0
        label = name
    # Long CPU runs must not end early because a request outlived the product's per-answer timeout.
    settings.llm.timeout_s = 24 * 3600
    if args.prompt_tokens + args.new_tokens > resolved.context_window:
        parser.error(f"prompt + new tokens exceed the model's {resolved.context_window}-token window")

    def new_engine() -> TransformersEngine:
        return TransformersEngine.from_model(
            settings, model=model, tokenizer=tokenizer, resolved=resolved, max_batch_size=args.max_batch_size
        )

    engine = new_engine()
    if args.shape:
        prompts = _random_prompts(model.config.vocab_size, max(concurrency), args.prompt_tokens)
    else:
        prompts = _real_prompts(engine, max(concurrency), args.prompt_tokens)
    device_name = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "cpu"
    log.info("%s on %s, %s, %d torch threads", label, device_name, dtype, torch.get_num_threads())

    reference: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    bare_prefill = 0.0
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
    for repeat in range(args.repeats):
        if engine is None:
            engine = new_engine()
        try:
            # generate first: on a GPU its KV cache is freed before the engine allocates its static one.
            _keep_best(reference, bench_generate(engine, prompts, concurrency, args.new_tokens, worker))
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
            if repeat == 0:
                bare_prefill = prefill_ms(engine, prompts[0], worker)
            _keep_best(ours, bench_engine(engine, prompts, concurrency, args.new_tokens))
        finally:
            engine.close()
        # A fresh engine per repeat: the closed one's KV cache goes before the next generate run needs memory.
        engine = None
        gc.collect()
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    worker.shutdown()

    ratios = {f"engine_vs_generate_c{n}": round(ours[f"tok_s_c{n}"] / reference[f"tok_s_c{n}"], 3) for n in concurrency}
    first = concurrency[0]
    for n in concurrency[1:]:
        ratios[f"engine_c{n}_vs_c{first}"] = round(ours[f"tok_s_c{n}"] / ours[f"tok_s_c{first}"], 3)
    ratios["engine_ttft_vs_prefill"] = round(ours["ttft_ms"] / bare_prefill, 3)
    print(
        json.dumps(
            {
                "device": device_name,
                "model": label,
                "dtype": str(dtype).removeprefix("torch."),
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens,
                "torch_threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "engine": ours,
                "generate": reference,
                "prefill_ms": bare_prefill,
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
