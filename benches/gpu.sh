#!/usr/bin/env bash
# The benchmark run for a lent NVIDIA GPU machine (the `device` tool), in one call of under
# ten minutes, from the repository root:
#     OUT=/some/folder bash benches/gpu.sh
# Needs python3 with torch (CUDA) and transformers 5.x, and the built extension at
# python/ferrogen/_core.abi3.so. Optional: wheels of transformers 4.55.4 (and its
# tokenizers / huggingface-hub) in .whl/ for the contrastive and constrained rows, and
# criterion bench binaries (cargo bench --no-run) in .devbin/ for the Rust core table.
# Every section has its own time limit and tees its rows as they come, so a slow section
# costs its own rows only.
set -u
OUT="${OUT:-benches/results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/golden-site .whl/*.whl
  mkdir -p /tmp/golden-venv/bin
  printf '#!/bin/sh\nPYTHONPATH=/tmp/golden-site exec %s "$@"\n' "$(command -v "$PY")" > /tmp/golden-venv/bin/python
  chmod +x /tmp/golden-venv/bin/python
  export FERROGEN_GOLDEN_VENV=/tmp/golden-venv
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; uptime; } > "$OUT/machine.txt" 2>&1
section() {  # seconds name command...: run with a limit, keep the log (SKIP="name ..." skips)
  local secs=$1 name=$2
  shift 2
  case " ${SKIP:-} " in *" $name "*) return 0 ;; esac
  echo "== $name ($(date +%T), limit ${secs}s)"
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$?" >> "$OUT/$name.log"
  tail -n 25 "$OUT/$name.log"
}
B=(benches/bench_generate.py --device cuda --repeats 3)
section 60 check "$PY" benches/gpu_check.py --device cuda
section 150 gpu_main "$PY" "${B[@]}" --models gpt2-2x128 gpt2-6x512 embedded --batches 1 4 16 \
  --strategies greedy sample beam4 beam8 beam_sample4 group8x4
section 90 gpu_golden "$PY" "${B[@]}" --models gpt2-6x512 --batches 1 8 --strategies contrastive constrained4
section 40 gpu_assisted "$PY" "${B[@]}" --assisted gpt2-8x512 --batches 1 4
section 60 cpu_main "$PY" benches/bench_generate.py --threads 8 --repeats 3 --models gpt2-2x128 --batches 1 4 \
  --strategies greedy sample beam4 beam_sample4 group8x4
section 45 processors "$PY" benches/bench_processors.py --batches 1 8 32 --vocabs 50257 128256 --stat min
for bin in .devbin/*; do
  [ -x "$bin" ] || continue
  FERROGEN_BENCH_QUICK=1 section 40 "criterion_$(basename "$bin")" "$bin" --bench --warm-up-time 0.3 \
    --measurement-time 1 --noplot
done
echo "== done $(date +%T)"
