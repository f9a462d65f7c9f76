"""Generation speed: our streaming engine (continuous batching) against `model.generate`, same model, same run.

python bench/generation.py [--model NAME | --shape llama-2-7b --random-weights] [--concurrency 1,8,32]
                           [--prompt-tokens 1536] [--new-tokens 128] [--references generate,static,compiled]
                           [--arrival poisson --rate 2 --requests 32] [--cpu-linear auto|linear|weight_first]
                           [--prompt-lookup N]
  -> {"device", "model", "engine": {"tok_s_c1", "tok_s_c8", ..., "ttft_ms", "itl_p50_ms_c1", ...},
      "generate": {...}, "generate_static": {...}, "generate_compiled": {...}, "poisson": {...}, ...} (last line)

tok_s_cN: generated tokens per second over all N requests, wall clock from the first request to the last token, with
N requests of --prompt-tokens each (engine: N threads each calling stream; generate: one call at batch N). Decoding
runs the full --new-tokens (end-of-sequence ignored) so both sides produce the same token count.
ttft_ms: time to the first token of one request with the prompt (median of 3).
itl_p50_ms_cN / itl_p99_ms_cN: inter-token latency in that run: the gaps between one stream's consecutive pieces
(engine; a piece is one token unless the detokenizer held one back) or decode steps (generate).
cpu_linear (CPU runs): the linear kernel the engine took per row-count bucket (support_bot/llm/backends/hf/cpu_linear.py);
plain `generate` on the same model always runs transformers' own F.linear.
prompt_lookup: draft tokens per step (--prompt-lookup, default the setting), and the draft tokens a lone greedy stream
checked and kept over all engine runs (support_bot/llm/backends/hf/lookup.py). Decoding past end-of-sequence, a small
model often repeats itself, which drafts from its own answer predict well: compare with --prompt-lookup 0, and see
bench/answers.py for whole answers that stop where the model ends them.
References: `generate` is plain `model.generate` (dynamic cache); `generate_static` adds a static cache;
`generate_compiled` a static cache with the forward compiled by torch.compile (GPU only; warmed up at each batch size
before timing, as a fair reference should be). The engine gets one short warm-up only, so that any lazy work (graph
capture, cache growth) it does during the timed runs is measured.
--arrival poisson: --requests requests arrive at random (Poisson, --rate a second) with prompt lengths drawn between a
quarter of --prompt-tokens and all of it; the engine streams each on arrival, plain `generate` serves them one at a
time in order of arrival (what a server without batching does). Reported under "poisson".
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import math
import os
import random
import signal
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


def _real_prompts(engine: Any, lengths: list[int]) -> list[list[int]]:
    """Different chat prompts of exactly these lengths in tokens: system header, FAQ sources, then the question."""
    from support_bot.llm.prompt import ChatMessage

    prompts = []
    for i, length in enumerate(lengths):
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


def _random_prompts(vocab_size: int, lengths: list[int]) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab_size, (length,), generator=generator).tolist() for length in lengths]


def varied_lengths(n: int, longest: int, seed: int = 3) -> list[int]:
    """n prompt lengths drawn evenly between a quarter of `longest` and all of it."""
    rng = random.Random(seed)
    return [rng.randint(max(1, longest // 4), longest) for _ in range(n)]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


REFERENCES = {"generate": "generate", "static": "generate_static", "compiled": "generate_compiled"}


def _generate_config(engine: Any, new_tokens: int, kind: str = "generate") -> Any:
    config = engine.generation_config(new_tokens)
    # Full-length decoding on both sides: the same token count whatever the (random) weights say.
    config.min_new_tokens = new_tokens
    if kind != "generate":
        config.cache_implementation = "static"
    # transformers compiles the forward itself for a static cache on a GPU; the static reference must not be.
    config.disable_compile = kind != "compiled"
    return config


class _StepClock:
    """A `generate` streamer that notes when each decode step's tokens come out (the first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _itl(results: dict[str, Any], n: int, gaps: list[float]) -> None:
    results[f"itl_p50_ms_c{n}"] = round(_percentile(gaps, 50) * 1000, 2)
    results[f"itl_p99_ms_c{n}"] = round(_percentile(gaps, 99) * 1000, 2)


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def _timed_generate(engine: Any, batch: list[list[int]], n_new: int, kind: str) -> tuple[float, list[float]]:
    """(seconds, times of each decode step) for one `generate` call over `batch`."""
    import torch

    model, device = engine.model, engine.device
    ids = torch.tensor(batch, device=model.device)
    clock = _StepClock()
    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), streamer=clock,
            generation_config=_generate_config(engine, n_new, kind),
        )  # fmt: skip
    _sync(device)
    elapsed = time.perf_counter() - started
    assert out.shape[1] - ids.shape[1] == n_new, "generate stopped early"
    return elapsed, [started] + clock.times


def bench_generate(
    engine: Any, prompts: list[list[int]], concurrency: list[int], new_tokens: int, worker: ThreadPoolExecutor,
    kind: str = "generate",
) -> dict[str, Any]:
    """`model.generate` (plain, static cache or compiled): batch N for throughput and inter-token latency, batch 1
    for time to first token."""
    import torch

    results: dict[str, Any] = {}

    def run(batch: list[list[int]], n_new: int) -> tuple[float, list[float]]:
        # On one long-lived worker thread, like the engine's scheduler: torch's per-thread CPU thread pools then
        # behave the same on both sides (on a busy machine a main-thread run was measured up to 8x slower).
        return worker.submit(_timed_generate, engine, batch, n_new, kind).result()

    if kind == "generate":
        run(prompts[:1], 2)  # warm-up
    first_token = []
    for n in concurrency:
        try:
            if kind != "generate":
                # A static cache is sized (and a compiled forward specialised) per batch size and length.
                run(prompts[:n], new_tokens)
            elapsed, times = run(prompts[:n], new_tokens)
        except torch.cuda.OutOfMemoryError:
            # A batch this large does not fit beside the weights: that is the reference's result, not a crash.
            log.warning("%s c%d ran out of GPU memory", REFERENCES[kind], n)
            results[f"oom_c{n}"] = True
            _free(True)
            continue
        results[f"tok_s_c{n}"] = round(n * new_tokens / elapsed, 2)
        _itl(results, n, _gaps(times[1:]))
        if n == 1:
            first_token.append(times[1] - times[0])
        log.info("%-17s c%-3d %.2f tok/s (%.2f s)", REFERENCES[kind], n, n * new_tokens / elapsed, elapsed)
    if kind == "generate":
        first_token = [run(prompts[:1], 1)[0] for _ in range(TTFT_RUNS)]
    if first_token:
        results["ttft_ms"] = round(statistics.median(first_token) * 1000, 1)
        log.info("%-17s ttft %.1f ms", REFERENCES[kind], results["ttft_ms"])
    return results


def _consume(
    engine: Any, prompt: list[int], new_tokens: int, errors: list[BaseException], times: list[float] | None = None
) -> None:
    try:
        for _ in engine.stream_ids(prompt, max_new_tokens=new_tokens, ignore_eos=True):
            if times is not None:
                times.append(time.perf_counter())
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def _stream_all(
    engine: Any, prompts: list[list[int]], new_tokens: int, arrivals: list[float] | None = None
) -> tuple[float, int, list[list[float]]]:
    """(start, tokens generated, each stream's piece times): every prompt streamed from a thread of its own, started
    at its arrival (seconds from the start; all at once without arrivals)."""
    errors: list[BaseException] = []
    piece_times: list[list[float]] = [[] for _ in prompts]
    threads = [
        threading.Thread(target=_consume, args=(engine, p, new_tokens, errors, t))
        for p, t in zip(prompts, piece_times, strict=True)
    ]
    before = engine.batcher.stats.tokens
    origin = time.perf_counter()
    for thread, at in zip(threads, arrivals or [0.0] * len(threads), strict=True):
        time.sleep(max(0.0, origin + at - time.perf_counter()))
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return origin, engine.batcher.stats.tokens - before, piece_times


def _concurrent(engine: Any, prompts: list[list[int]], new_tokens: int) -> tuple[float, int, list[float]]:
    """(seconds, tokens generated, inter-piece gaps) for all prompts streamed at once, one thread each."""
    started, tokens, piece_times = _stream_all(engine, prompts, new_tokens)
    elapsed = time.perf_counter() - started
    return elapsed, tokens, [g for t in piece_times for g in _gaps(t)]


def bench_engine(engine: Any, prompts: list[list[int]], concurrency: list[int], new_tokens: int) -> dict[str, Any]:
    """Our engine through its streaming API: N concurrent streams, and the first piece of one stream."""
    results: dict[str, Any] = {}
    # One short warm-up, not one per concurrency at full length: lazy work (a graph captured on first use, a cache
    # grown) during the timed runs must show in them.
    _concurrent(engine, prompts[:1], 2)
    for n in concurrency:
        elapsed, tokens, gaps = _concurrent(engine, prompts[:n], new_tokens)
        if tokens != n * new_tokens:
            raise RuntimeError(f"engine produced {tokens} tokens, expected {n * new_tokens}")
        results[f"tok_s_c{n}"] = round(tokens / elapsed, 2)
        _itl(results, n, gaps)
        log.info("engine            c%-3d %.2f tok/s (%.2f s, largest batch %d, itl p50 %.1f p99 %.1f ms)", n,
                 tokens / elapsed, elapsed, engine.batcher.stats.largest_batch, results[f"itl_p50_ms_c{n}"],
                 results[f"itl_p99_ms_c{n}"])  # fmt: skip
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
    log.info("engine            ttft %.1f ms", results["ttft_ms"])
    return results


def poisson_arrivals(n: int, rate: float, seed: int = 2) -> list[float]:
    """Seconds from the start at which n requests arrive, with exponential gaps of mean 1/rate."""
    rng = random.Random(seed)
    now, arrivals = 0.0, []
    for _ in range(n):
        arrivals.append(now)
        now += rng.expovariate(rate)
    return arrivals


def _latency_summary(
    starts: list[float], arrivals: list[float], piece_times: list[list[float]], tokens: int
) -> dict[str, Any]:
    ttft = [t[0] - a for t, a in zip(piece_times, arrivals, strict=True) if t]
    gaps = [g for t in piece_times for g in _gaps(t)]
    span = max(t[-1] for t in piece_times if t) - min(starts)
    return {
        "tok_s": round(tokens / span, 2),
        "ttft_p50_ms": round(_percentile(ttft, 50) * 1000, 1),
        "ttft_p99_ms": round(_percentile(ttft, 99) * 1000, 1),
        "itl_p50_ms": round(_percentile(gaps, 50) * 1000, 2),
        "itl_p99_ms": round(_percentile(gaps, 99) * 1000, 2),
    }


def poisson_engine(engine: Any, prompts: list[list[int]], arrivals: list[float], new_tokens: int) -> dict[str, Any]:
    """Staggered arrivals, our engine: each request streamed from its own thread when it arrives."""
    origin, tokens, piece_times = _stream_all(engine, prompts, new_tokens, arrivals)
    absolute = [origin + a for a in arrivals]
    ours = _latency_summary(absolute, absolute, piece_times, tokens)
    log.info("engine    poisson %s", ours)
    return ours


def poisson_generate(
    view: Any, prompts: list[list[int]], arrivals: list[float], new_tokens: int, worker: ThreadPoolExecutor
) -> dict[str, Any]:
    """Staggered arrivals, plain `generate`: one request at a time in order of arrival (no batching)."""
    step_times: list[list[float]] = []
    origin = time.perf_counter()
    for prompt, at in zip(prompts, arrivals, strict=True):
        time.sleep(max(0.0, origin + at - time.perf_counter()))
        _, times = worker.submit(_timed_generate, view, [prompt], new_tokens, "generate").result()
        step_times.append(times[1:])
    absolute = [origin + a for a in arrivals]
    reference = _latency_summary(absolute, absolute, step_times, len(prompts) * new_tokens)
    log.info("generate  poisson %s", reference)
    return reference


def _keep_best(best: dict[str, Any], run: dict[str, Any]) -> None:
    """Best over repeats (highest tokens/s, lowest latency): on a shared machine, slower runs measure neighbours."""
    for key, value in run.items():
        keep = min if "_ms" in key else max
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
    parser.add_argument("--references", help="generate,static,compiled (default: all on a GPU; no compiled on a CPU)")
    parser.add_argument("--arrival", choices=["burst", "poisson"], default="burst",
                        help="poisson: also staggered arrivals with varied prompt lengths")  # fmt: skip
    parser.add_argument("--attention", choices=["auto", "flex", "dense"], default="auto",
                        help="the engine's decode attention (settings llm.decode_attention)")
    parser.add_argument("--cpu-linear", choices=["auto", "linear", "weight_first"], default="auto",
                        help="the engine's CPU linear kernels (settings llm.cpu_linear)")
    parser.add_argument("--prompt-lookup", type=int, default=None, metavar="N",
                        help="draft tokens a lone stream checks per step (settings llm.prompt_lookup_tokens; 0: off)")
    parser.add_argument("--rate", type=float, default=2.0, help="poisson arrivals a second")
    parser.add_argument("--requests", type=int, default=16, help="requests in the poisson run")
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
    settings.llm.decode_attention = args.attention
    settings.llm.cpu_linear = args.cpu_linear
    if args.prompt_lookup is not None:
        settings.llm.prompt_lookup_tokens = args.prompt_lookup
    if args.prompt_tokens + args.new_tokens > resolved.context_window:
        parser.error(f"prompt + new tokens exceed the model's {resolved.context_window}-token window")

    def new_engine() -> TransformersEngine:
        return TransformersEngine.from_model(
            settings, model=model, tokenizer=tokenizer, resolved=resolved, max_batch_size=args.max_batch_size
        )

    engine = new_engine()
    view = _Generator(model, engine.device, engine.generation_config(1))
    lengths = [args.prompt_tokens] * max(concurrency)
    varied = varied_lengths(args.requests, args.prompt_tokens) if args.arrival == "poisson" else []
    if args.shape:
        prompts = _random_prompts(model.config.vocab_size, lengths + varied)
    else:
        prompts = _real_prompts(engine, lengths + varied)
    prompts, staggered = prompts[: len(lengths)], prompts[len(lengths) :]
    device_name = torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "cpu"
    log.info("%s on %s, %s, %d torch threads", label, device_name, dtype, torch.get_num_threads())
    on_gpu = model.device.type == "cuda"
    kinds = [k.strip() for k in (args.references or ("generate,static,compiled" if on_gpu else "generate,static"))
             .split(",") if k.strip()]  # fmt: skip
    if "generate" not in kinds or any(k not in REFERENCES for k in kinds):
        parser.error(f"--references takes generate (required), static and compiled; got {args.references!r}")
    if "compiled" in kinds and not on_gpu:
        parser.error("the compiled reference runs on a GPU only (transformers compiles generate's forward there)")

    references: dict[str, dict[str, Any]] = {k: {} for k in kinds}
    ours: dict[str, Any] = {}
    attention = args.attention  # what the engine ran with (auto resolved, or a fallback from flex to dense)
    linear_kernels: dict[str, str] | None = None  # CPU: the linear kernel per row-count bucket (cpu_linear.py)
    lookup = {"tokens": settings.llm.prompt_lookup_tokens, "drafted": 0, "accepted": 0}  # lookup.py, all engine runs
    poisson: dict[str, Any] = {}
    arrivals = poisson_arrivals(len(staggered), args.rate)
    bare_prefill = 0.0
    cut: str | None = None
    # The references run on a worker thread of their own, and it ends before the engine starts: OpenMP keeps a thread
    # team per calling thread, and with a second team alive beside the engine's (more threads than cores) every
    # small parallel section waits for sleeping threads. On 2 cores the engine wrote 64 tokens in 4.4 s instead of
    # 2.9 s once the references' thread had run, and the references slowed the same way beside an engine.
    worker = _reference_thread()
    # Killed by a time limit (gpu_check.sh's `timeout`), still print what was measured: the compiled reference, whose
    # compilation time is the hardest to foresee, comes last.
    signal.signal(signal.SIGTERM, _out_of_time)
    # The engine sizes its KV cache from the memory free when it starts: none of it may be held while the references
    # run, so each repeat starts a fresh engine after them and closes it before the next.
    engine.close()
    engine = None
    _free(on_gpu)
    try:
        for repeat in range(args.repeats):
            for kind in [k for k in kinds if k != "compiled"]:
                _keep_best(references[kind], bench_generate(view, prompts, concurrency, args.new_tokens, worker, kind))
                _free(on_gpu)
            if repeat == 0:
                bare_prefill = prefill_ms(view, prompts[0], worker)
            worker.shutdown(wait=True)
            engine = new_engine()
            try:
                _keep_best(ours, bench_engine(engine, prompts, concurrency, args.new_tokens))
                attention = engine.batcher.attention
                stats = engine.batcher.stats
                lookup["drafted"] += stats.drafted
                lookup["accepted"] += stats.accepted
                if engine.batcher.linear_kernels is not None:
                    linear_kernels = {str(rows): k for rows, k in engine.batcher.linear_kernels.choices.items()}
                if staggered and repeat == 0:
                    poisson["engine"] = poisson_engine(engine, staggered, arrivals, args.new_tokens)
            finally:
                engine.close()
                engine = None
                _free(on_gpu)
            worker = _reference_thread()
            if staggered and repeat == 0:
                poisson["generate"] = poisson_generate(view, staggered, arrivals, args.new_tokens, worker)
            if "compiled" in kinds:
                run = bench_generate(view, prompts, concurrency, args.new_tokens, worker, "compiled")
                _keep_best(references["compiled"], run)
                _free(on_gpu)
    except _OutOfTime:
        cut = "stopped by its time limit; what was measured before is reported"
        log.warning("%s", cut)
    worker.shutdown(wait=cut is None, cancel_futures=True)
    result = {
        "device": device_name,
        "model": label,
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "engine": ours,
        "attention": attention,
        **({"cpu_linear": linear_kernels} if linear_kernels else {}),
        "prompt_lookup": lookup,
        "generate": references["generate"],
        **{REFERENCES[k]: references[k] for k in kinds[1:] if references[k]},
        "prefill_ms": bare_prefill,
        "ratios": _ratios(ours, references, concurrency, bare_prefill),
    }
    if poisson:
        poisson.update(rate_per_s=args.rate, requests=len(staggered), prompt_tokens=varied)
        result["poisson"] = poisson
    if cut:
        result["incomplete"] = cut
    print(json.dumps(result), flush=True)
    if cut:
        os._exit(124)  # the worker may still be compiling; do not wait for it


@dataclass
class _Generator:
    """What the references need of the engine: the model and its generation settings, none of the engine's memory
    (the compiled reference runs after the engine is closed)."""

    model: Any
    device: str
    config: Any

    def generation_config(self, max_new_tokens: int) -> Any:
        config = copy.deepcopy(self.config)
        config.max_new_tokens = max_new_tokens
        return config


class _OutOfTime(Exception):
    pass


def _reference_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")


def _out_of_time(signum: int, frame: Any) -> None:
    raise _OutOfTime


def _free(on_gpu: bool) -> None:
    import torch

    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()


def _ratios(
    ours: dict[str, Any], references: dict[str, dict[str, Any]], concurrency: list[int], bare_prefill: float
) -> dict[str, float]:
    """Engine over each reference measured in this run, and over its own first concurrency level."""
    ratios: dict[str, float] = {}
    measured = [n for n in concurrency if f"tok_s_c{n}" in ours]
    for kind, reference in references.items():
        prefix = "engine_vs_generate" if kind == "generate" else f"engine_vs_{REFERENCES[kind]}"
        for n in measured:
            if f"tok_s_c{n}" in reference:
                ratios[f"{prefix}_c{n}"] = round(ours[f"tok_s_c{n}"] / reference[f"tok_s_c{n}"], 3)
    for n in measured[1:]:
        ratios[f"engine_c{n}_vs_c{measured[0]}"] = round(ours[f"tok_s_c{n}"] / ours[f"tok_s_c{measured[0]}"], 3)
    if "ttft_ms" in ours and bare_prefill:
        ratios["engine_ttft_vs_prefill"] = round(ours["ttft_ms"] / bare_prefill, 3)
    for n in measured:
        best = max((r[f"tok_s_c{n}"] for r in references.values() if f"tok_s_c{n}" in r), default=0.0)
        if best:
            ratios[f"engine_vs_best_reference_c{n}"] = round(ours[f"tok_s_c{n}"] / best, 3)
        ratios[f"engine_itl_p99_vs_p50_c{n}"] = round(ours[f"itl_p99_ms_c{n}"] / max(ours[f"itl_p50_ms_c{n}"], 1e-3), 3)
    return ratios

if __name__ == "__main__":
    main()
