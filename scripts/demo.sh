#!/usr/bin/env bash
# The main job on a fresh machine: an unmodified CUDA program, through the Remora shim, on the
# embedded emulated GPU. Installs the CUDA client toolchain from PyPI (cached in .cache/),
# builds Remora, compiles a CUDA C program with gcc against NVIDIA's cuda.h and NVRTC and a CUDA
# C++ program with nvcc, and runs both under `remora run` (no server configured: an emulated
# one starts on loopback for each).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-cuda.sh
source .cache/cuda/env.sh
cargo build --release --locked -p remora -p remora-shim -p remora-nvjitlink-off -p remora-nvrtc -p remora-nvrtc13 -p remora-nvml
mkdir -p target/demo/lib
ln -sf ../../release/libremora_shim.so target/demo/lib/libcuda.so
gcc -O2 -Wno-deprecated-declarations -I"$CUDA12_INCLUDE" -Itests/programs tests/programs/nvrtc_kernels.c \
    -o target/demo/nvrtc_kernels -Ltarget/demo/lib -L"$CUDA12_LINK" -lcuda -lnvrtc -lm
# And an ordinary nvcc-built CUDA program (static cudart, tiled matrix multiply), unmodified.
"$NVCC13" -arch=compute_80 -code=compute_80 tests/programs/cuda/matmul.cu -o target/demo/matmul
export LD_LIBRARY_PATH="$CUDA12_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "+ remora run -- target/demo/nvrtc_kernels"
target/release/remora run -- target/demo/nvrtc_kernels "${@:-compute}"
echo "+ remora run -- target/demo/matmul"
target/release/remora run -- target/demo/matmul
