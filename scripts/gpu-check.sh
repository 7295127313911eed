#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA driver and GPU, builds Remora, starts a `cuda`
# server, runs the whole client suite against real GPUs (the same end-to-end tests as CI, with
# REMORA_TEST_BACKEND=cuda), a cuBLAS matmul through CuPy, PyTorch if installed, and the
# transport benchmarks, then prints a table of passes and numbers. Designed to finish within
# 8 minutes on one machine with one GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
results=()
record() { results+=("$(printf '%-58s %s' "$1" "$2")"); }

nvidia-smi -L || echo "nvidia-smi not available"
bash scripts/setup-cuda.sh --python >/dev/null || { echo "setup failed"; exit 1; }
source .cache/cuda/env.sh
cargo build --release --locked -p remora -p remora-shim -p remora-nvjitlink-off -p remora-nvrtc -p remora-nvrtc13 -p remora-nvml 2>&1 | tail -1
cargo build --locked -p remora -p remora-shim -p remora-nvjitlink-off -p remora-nvrtc -p remora-nvrtc13 -p remora-nvml 2>&1 | tail -1

# 1. The backend's own tests (probe, layouts, error mapping) with a real driver present.
if timeout 120 cargo test --locked -p remora-server cuda 2>&1 | tail -3 | grep -q "test result: ok"; then
    record "server unit tests (cuda backend)" PASS; else record "server unit tests (cuda backend)" FAIL; fi

# 2. A server on the real GPUs.
state=$(mktemp -d)
target/release/remora serve --backend cuda --listen 127.0.0.1:0 --state-dir "$state" \
    --connection-file "$state/conn" > "$state/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -f "$state/conn" ] && break; sleep 0.1; done
if [ -f "$state/conn" ]; then record "remora serve --backend cuda" PASS; else
    record "remora serve --backend cuda" "FAIL: $(tail -1 "$state/serve.log")"; fi
target/release/remora devices --connection "$state/conn" | sed 's/^/    /'

# 3. The end-to-end suite against real GPUs.
REMORA_TEST_BACKEND=cuda timeout 300 cargo nextest run --locked -p remora-tests --no-fail-fast \
    > "$state/e2e.log" 2>&1
while read -r line; do
    name=$(echo "$line" | awk '{print $NF}')
    verdict=$(echo "$line" | awk '{print $1}')
    record "e2e $name" "$verdict"
done < <(grep -E '^ +(PASS|FAIL|TIMEOUT)' "$state/e2e.log" | sed 's/^ *//')

# 4. cuBLAS through CuPy (machine code only: needs the real GPU).
cat > "$state/matmul.py" <<'PY'
import numpy as np, cupy as cp
a = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
c = cp.matmul(cp.asarray(a), cp.asarray(a)).get()
np.testing.assert_allclose(c, a @ a, rtol=1e-3, atol=1e-3)
print("cupy matmul passed")
PY
mkdir -p "$state/cuda/include" && ln -sfn "$CUDA12_INCLUDE" "$state/cuda/include"
if CUDA_PATH="$state/cuda" LD_LIBRARY_PATH="$CUDA12_LIB" timeout 120 target/release/remora run \
    --connection "$state/conn" -- python3 tests/python/run_site.py "$CUDA_PY" "$state/matmul.py" 2>&1 \
    | grep -q "cupy matmul passed"; then record "cupy.matmul (cuBLAS)" PASS; else record "cupy.matmul (cuBLAS)" FAIL; fi

# 5. PyTorch, if this machine has it.
if python3 -c "import torch" 2>/dev/null; then
    if timeout 120 target/release/remora run --connection "$state/conn" -- python3 -c \
        "import torch; x=torch.randn(512,512,device='cuda'); print('torch', float((x@x).sum().cpu()))" \
        2>&1 | grep -q "^torch"; then record "PyTorch matmul" PASS; else record "PyTorch matmul" FAIL; fi
else
    record "PyTorch matmul" "SKIPPED (torch not installed)"
fi

# 6. Transport benchmarks (their baselines are measured in the same run).
REMORA_BENCH_BULK_REPS=3 timeout 180 cargo bench --locked -p remora-benches --bench transport \
    > "$state/bench.log" 2>&1
kill "$server" 2>/dev/null

echo
echo "=== Remora GPU check ==="
printf '%s\n' "${results[@]}"
echo
grep -E 'round trip p50|HtoD best|DtoH best|calls/s incl' "$state/bench.log" || tail -5 "$state/bench.log"
rm -rf "$state"
