#!/usr/bin/env bash
# The GPU check, in one call on a machine without network: the batching correctness test on CUDA, then the
# generation benchmark (Llama-2-7B shape, random weights, bf16, concurrency 1,32,64, 1,536-token prompts) against
# plain, static-cache and compiled `generate`. Prints the benchmark's JSON last.
#
#   bash bench/gpu_check.sh            # on the GPU machine (about 6 minutes on one H100)
#   bash bench/gpu_check.sh --cpu      # dry run of the same steps on a CPU with a tiny model (seconds to minutes)
#
# It installs nothing from the network. The machine needs torch, transformers and pytest; this repository goes on
# PYTHONPATH. The project's own small pure-Python dependencies the code imports (pydantic, pydantic-settings,
# python-dotenv and theirs) are used when installed, else installed from wheels in $WHEELS (default bench/wheels)
# with `pip install --no-index`; without them the steps that need them are skipped and say so.
# Environment: PYTHON (default python3), WHEELS, BUDGET_S (default 470: the benchmark is stopped in time for its
# partial JSON to print within 8 minutes), CONCURRENCY, PROMPT_TOKENS, NEW_TOKENS, REFERENCES, ATTENTION (the engine's
# decode attention: auto, the default, is FlexAttention over each request's own KV blocks on one GPU; dense for the
# masked span; the JSON's "attention" says which ran).
set -uo pipefail

cd "$(dirname "$0")/.."
started=$(date +%s)
mode=gpu
if [[ "${1:-}" == "--cpu" ]]; then
    mode=cpu
fi
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-bench/wheels}
BUDGET_S=${BUDGET_S:-470}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

say() { echo "gpu_check: $*" >&2; }

if ! "$PYTHON" -c "import torch, transformers" 2>/dev/null; then
    say "torch and transformers are needed and not importable by $PYTHON"
    exit 2
fi
"$PYTHON" - <<'EOF' >&2
import torch, transformers
cuda = torch.cuda.is_available()
print(f"gpu_check: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"{torch.cuda.device_count() if cuda else 0} GPU(s)" + (f": {torch.cuda.get_device_name(0)}" if cuda else ""))
EOF
if [[ $mode == gpu ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "no GPU visible; run with --cpu for a dry run"
    exit 2
fi

project_imports() { "$PYTHON" -c "import support_bot.llm.backends.hf.engine" 2>/dev/null; }
if ! project_imports && [[ -d $WHEELS ]]; then
    say "installing the project's small dependencies from $WHEELS (no network)"
    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" pydantic pydantic-settings python-dotenv >&2 \
        || say "pip could not install from $WHEELS"
fi
if ! project_imports; then
    say "SKIPPED: support_bot cannot be imported here (missing dependencies, see below); bring their wheels in $WHEELS"
    "$PYTHON" -c "import support_bot.llm.backends.hf.engine" 2>&1 | tail -1 >&2
    exit 3
fi

tests_rc=0
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    # --noconftest: the suite's fixtures need the database and web stack; this file needs neither.
    say "correctness: batched == single greedy tokens, flex and dense decode attention ($mode)"
    "$PYTHON" -m pytest -q -p no:cacheprovider --noconftest tests/llm/test_batching_on_device.py >&2
    tests_rc=$?
else
    say "SKIPPED: pytest is not installed, so the correctness test did not run"
fi

if [[ $mode == gpu ]]; then
    args=(--shape llama-2-7b --random-weights --concurrency "${CONCURRENCY:-1,32,64}" --max-batch-size 64
          --prompt-tokens "${PROMPT_TOKENS:-1536}" --new-tokens "${NEW_TOKENS:-128}"
          --references "${REFERENCES:-generate,static,compiled}" --attention "${ATTENTION:-auto}")
else
    args=(--shape tiny --random-weights --concurrency "${CONCURRENCY:-1,4}" --max-batch-size 4
          --prompt-tokens "${PROMPT_TOKENS:-64}" --new-tokens "${NEW_TOKENS:-16}"
          --references "${REFERENCES:-generate,static}" --attention "${ATTENTION:-auto}")
fi
left=$((BUDGET_S - ($(date +%s) - started)))
if ((left < 60)); then
    say "SKIPPED: the benchmark, only ${left}s of the budget left"
    exit 4
fi
say "benchmark: ${args[*]} (stopped after ${left}s)"
# SIGTERM at the limit: the benchmark prints what it measured so far, marked "incomplete".
timeout --signal=TERM --kill-after=20 "$left" "$PYTHON" bench/generation.py "${args[@]}"
bench_rc=$?
say "tests exit $tests_rc, benchmark exit $bench_rc, $(($(date +%s) - started))s in all"
if ((tests_rc != 0)); then
    exit "$tests_rc"
fi
exit "$bench_rc"
