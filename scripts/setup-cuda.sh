#!/usr/bin/env bash
# Installs NVIDIA's client-side CUDA pieces from PyPI wheels into <repo>/.cache/cuda, for a
# machine with no GPU and no driver (see docs/CUDA-COMPAT.md, "Getting the clients").
#
#   scripts/setup-cuda.sh            # cu12 + cu13 (headers, cudart, NVRTC, nvcc 13)
#   scripts/setup-cuda.sh --python   # also py: CuPy, numba-cuda, numpy; and sweep: Optuna,
#                                    # kubernetes-validate (examples/sweep, deploy/kubernetes);
#                                    # nvml: pynvml, for the NVML stand-in's tests; and suites:
#                                    # pytest and what the clients' own test suites import
#   scripts/setup-cuda.sh --cupy-tests   # also CuPy's own tests/, from its sdist (client-suites.sh)
#   source .cache/cuda/env.sh        # CUDA12_INCLUDE, CUDA13_LIB, NVCC13, ...
#
# Each component goes into its own `pip install --target` folder, so CUDA 12 and 13 wheels (which
# share the `nvidia/` namespace and some file names) never overwrite each other. A component is
# skipped when its stamp file holds exactly its package list and the Python version, so reruns
# take about a second; downloaded wheels are kept per machine in ~/.cache/remora/wheels
# (REMORA_WHEEL_CACHE overrides), so a fresh checkout, or CI's clean clone, installs without
# downloading anything this machine has seen before. Cold: about 1 GB of wheels, 2 GB
# installed with --python (cu12 0.3 GB, cu13 0.5 GB, py 1.1 GB), under a minute here.
#
# Versions that pip resolved when this was written (check with `pip index versions NAME`):
#   cu12: nvidia-cuda-runtime-cu12 12.9.79, nvidia-cuda-nvrtc-cu12 12.9.86,
#         nvidia-cuda-nvcc-cu12 12.9.86
#   cu13: nvidia-cuda-runtime, nvidia-cuda-nvrtc, nvidia-cuda-nvcc, nvidia-nvvm,
#         nvidia-cuda-crt: all 13.5.37
#   py:   cupy-cuda12x 14.2.0, numba-cuda 0.30.4, numpy 2.4.6
#   nvml: nvidia-ml-py 13.615.71
#   suites: pytest 8.4.2, pytest-benchmark 5.3.1, filecheck 1.0.6, ml_dtypes 0.6.0, cffi 2.1.1,
#         psutil 7.2.2, hypothesis 6.54.6, mpmath 1.4.1; cupy-tests: the cupy 14.2.0 sdist
#   sweep: optuna 5.0.0, kubernetes-validate 1.37.0 (bundles the Kubernetes JSON schemas, so it
#         validates offline)
# cu13 is pinned to 13.5.* on purpose: scripts/gen-shim-table.py reads its cuda.h, and the
# shim's table must not change under us when NVIDIA publishes 13.6. Bump it deliberately.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/cuda"
MACHINE_CACHE="${REMORA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/remora}"
export PIP_CACHE_DIR="$MACHINE_CACHE/pip"
WHEELS="$MACHINE_CACHE/wheels"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"

WITH_PYTHON=0
WITH_CUPY_TESTS=0
for arg in "$@"; do
    case "$arg" in
        --python) WITH_PYTHON=1 ;;
        --cupy-tests) WITH_PYTHON=1 WITH_CUPY_TESTS=1 ;;
        -h | --help)
            sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup-cuda.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

CU12_PKGS=(
    "nvidia-cuda-runtime-cu12==12.9.*"
    "nvidia-cuda-nvrtc-cu12==12.9.*"
    "nvidia-cuda-nvcc-cu12==12.9.*"
)
CU13_PKGS=(
    "nvidia-cuda-runtime==13.5.*"
    "nvidia-cuda-nvrtc==13.5.*"
    "nvidia-cuda-nvcc==13.5.*"
    "nvidia-nvvm==13.5.*"
    "nvidia-cuda-crt==13.5.*"
)
# numba-cuda needs libNVVM, which for CUDA 12 is in nvidia-cuda-nvcc-cu12; without the [cu12]
# extra it pulls CUDA 13 bindings. Everything here is importable with PYTHONPATH=$CUDA_PY.
PY_PKGS=(
    "cupy-cuda12x==14.*"
    "numba-cuda[cu12]==0.30.*"
    "nvidia-cuda-nvcc-cu12==12.9.*"
    "nvidia-cuda-nvrtc-cu12==12.9.*"
    "nvidia-cuda-runtime-cu12==12.9.*"
    "numpy"
)
# Host-side tools, kept apart from py so that changing them never reinstalls CuPy: the Optuna
# driver of examples/sweep (it runs outside `remora run`; its trials use py) and the schema
# validator the tests run over deploy/kubernetes. PYTHONPATH=$SWEEP_PY.
SWEEP_PKGS=(
    "optuna==5.*"
    "kubernetes-validate==1.*"
)
# NVIDIA's NVML bindings (pynvml), which the tests of the NVML stand-in drive. PYTHONPATH=$NVML_PY.
NVML_PKGS=(
    "nvidia-ml-py==13.*"
)
# What numba-cuda's and CuPy's own test suites import beyond py (scripts/client-suites.sh, and the
# quick subset in tests/tests/client_suites.rs): numba's testing module imports filecheck at
# import time; CuPy's tests pin hypothesis below 6.55. PYTHONPATH=$SUITES_PY (after $CUDA_PY).
SUITES_PKGS=(
    "pytest==8.*"
    "pytest-benchmark==5.*"
    "filecheck==1.*"
    "ml_dtypes"
    "cffi"
    "psutil"
    "hypothesis>=6.37.2,<6.55"
    "mpmath"
)

PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

dist_version() { # dist_version FOLDER DIST-NAME
    local info
    info="$(ls -d "$1"/"$2"-*.dist-info 2>/dev/null | head -n1)"
    [[ -n "$info" ]] && sed -n 's/^Version: //p' "$info/METADATA"
}

# install COMPONENT PKG... : pip-installs PKG... into $CACHE/COMPONENT unless its stamp matches.
install() {
    local comp="$1"
    shift
    local dest="$CACHE/$comp"
    local want
    want="$(printf '%s\n' "python $PY_VERSION" "$@")"
    if [[ -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "$want" ]]; then
        INSTALLED+=("$comp (cached)")
        return
    fi
    echo "setup-cuda.sh: installing $comp: $*" >&2
    # Install into a fresh folder and move it in place only when pip succeeded, so an interrupted
    # run never leaves a half-filled folder behind a valid-looking path.
    local tmp="$CACHE/.tmp-$comp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # pip's HTTP cache stays empty here (the registry's responses are not cacheable), so keep
    # the wheels themselves: `pip download` skips files already in $WHEELS, and the install
    # then reads only from there.
    "$PYTHON" -m pip download --quiet --dest "$WHEELS" "$@"
    "$PYTHON" -m pip install --quiet --no-warn-script-location --no-index \
        --find-links "$WHEELS" --target "$tmp" "$@"
    printf '%s\n' "$want" >"$tmp/.stamp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    INSTALLED+=("$comp")
}

# install_cupy_tests : CuPy's own tests/ (not in any wheel) from the sdist of the CuPy version py
# holds, into $CACHE/cupy-tests. pip cannot fetch that sdist (`pip download` builds its metadata,
# which needs a CUDA toolkit), so it comes from PyPI's JSON API, checked against its sha256.
install_cupy_tests() {
    local version dest="$CACHE/cupy-tests"
    version="$(dist_version "$CACHE/py" cupy_cuda12x)"
    if [[ -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "cupy $version" ]]; then
        INSTALLED+=("cupy-tests (cached)")
        return
    fi
    local sdist="$MACHINE_CACHE/sdists/cupy-$version.tar.gz"
    if [[ ! -f "$sdist" ]]; then
        echo "setup-cuda.sh: downloading the cupy $version sdist for its tests" >&2
        mkdir -p "$(dirname "$sdist")"
        local url sha
        read -r url sha < <(curl -fsSL https://pypi.org/pypi/cupy/json | "$PYTHON" -c '
import json, sys
for f in json.load(sys.stdin)["releases"][sys.argv[1]]:
    if f["packagetype"] == "sdist":
        print(f["url"], f["digests"]["sha256"])' "$version")
        curl -fsSL -o "$sdist.part" "$url"
        echo "$sha  $sdist.part" | sha256sum --check --quiet
        mv "$sdist.part" "$sdist"
    fi
    local tmp="$CACHE/.tmp-cupy-tests"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar -xzf "$sdist" -C "$tmp" --strip-components=1 "cupy-$version/tests" \
        "cupy-$version/pyproject.toml"
    printf 'cupy %s\n' "$version" >"$tmp/.stamp"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    INSTALLED+=("cupy-tests")
}

mkdir -p "$CACHE" "$WHEELS"
INSTALLED=()
install cu12 "${CU12_PKGS[@]}"
install cu13 "${CU13_PKGS[@]}"
if [[ $WITH_PYTHON == 1 ]]; then
    install py "${PY_PKGS[@]}"
    install sweep "${SWEEP_PKGS[@]}"
    install nvml "${NVML_PKGS[@]}"
    install suites "${SUITES_PKGS[@]}"
fi
if [[ $WITH_CUPY_TESTS == 1 ]]; then
    install_cupy_tests
fi

# ---- Folders other scripts and tests use (rebuilt on every run: cheap, and it follows a moved
# checkout). Links are relative so that they survive copying .cache/cuda along with the tree.

CU12="$CACHE/cu12/nvidia"
CU13="$CACHE/cu13/nvidia/cu13"

# link_all DIR SRC... : a fresh DIR holding a relative symlink to every entry of each SRC folder.
link_all() {
    local dir="$1"
    shift
    rm -rf "$dir"
    mkdir -p "$dir"
    local src entry
    for src in "$@"; do
        for entry in "$src"/*; do
            [[ -e "$entry" && "$(basename "$entry")" != __* ]] || continue
            ln -s "$(realpath --relative-to="$dir" "$entry")" "$dir/$(basename "$entry")"
        done
    done
}

# link_as DIR NAME TARGET : DIR/NAME -> TARGET, relative.
link_as() {
    ln -sfn "$(realpath --relative-to="$1" "$3")" "$1/$2"
}

# CUDA 12 is spread over three wheels: cuda.h and cuda_runtime.h (runtime), crt/ (nvcc),
# nvrtc.h (nvrtc). Their file names do not overlap, so one merged folder serves one -I.
link_all "$CACHE/include12" "$CU12/cuda_runtime/include" "$CU12/cuda_nvcc/include" \
    "$CU12/cuda_nvrtc/include"
# libnvrtc.so.12 dlopens libnvrtc-builtins.so.12.9 next to itself, so keep them together.
link_all "$CACHE/lib12" "$CU12/cuda_runtime/lib" "$CU12/cuda_nvrtc/lib" \
    "$CU12/cuda_nvcc/nvvm/lib64"

# No wheel ships unversioned names, which `-lcudart` / `-lnvrtc` need at link time (run time uses
# the versioned SONAMEs, found through LD_LIBRARY_PATH=$CUDA12_LIB or $CUDA13_LIB). There is no
# libcuda.so here: link driver-API programs against the shim (SONAME libcuda.so.1).
rm -rf "$CACHE/link" "$CACHE/link13"
mkdir -p "$CACHE/link" "$CACHE/link13"
link_as "$CACHE/link" libcudart.so "$CU12/cuda_runtime/lib/libcudart.so.12"
link_as "$CACHE/link" libnvrtc.so "$CU12/cuda_nvrtc/lib/libnvrtc.so.12"
link_as "$CACHE/link" libcudart_static.a "$CU12/cuda_runtime/lib/libcudart_static.a"
link_as "$CACHE/link" libculibos.a "$CU12/cuda_runtime/lib/libculibos.a"
link_as "$CACHE/link13" libcudart.so "$CU13/lib/libcudart.so.13"
link_as "$CACHE/link13" libnvrtc.so "$CU13/lib/libnvrtc.so.13"
link_as "$CACHE/link13" libnvvm.so "$CU13/lib/libnvvm.so.4"
link_as "$CACHE/link13" libcudart_static.a "$CU13/lib/libcudart_static.a"

# nvcc 13 from the wheels needs nothing else: its bin/nvcc.profile points at ../nvvm/bin (cicc),
# ../nvvm/libdevice, ../include and ../lib, and it finds /usr/bin/gcc (12) as host compiler on
# its own. Only `-cudart shared` needs `-L$CUDA13_LINK` (for the unversioned libcudart.so).
NVCC13="$CU13/bin/nvcc"
if ! NVCC_VERSION="$("$NVCC13" --version 2>&1)"; then
    echo "setup-cuda.sh: $NVCC13 --version failed:" >&2
    echo "$NVCC_VERSION" >&2
    exit 1
fi
NVCC_RELEASE="$(sed -n 's/.*, V\([0-9.]*\)$/\1/p' <<<"$NVCC_VERSION")"

CUDART12_VERSION="$(dist_version "$CACHE/cu12" nvidia_cuda_runtime_cu12)"
CUDART13_VERSION="$(dist_version "$CACHE/cu13" nvidia_cuda_runtime)"

{
    echo "# @generated by scripts/setup-cuda.sh; sourced by scripts and tests. Do not edit."
    echo "export CUDA_CACHE='$CACHE'"
    echo "# cuda.h, cudaTypedefs.h, cuda_runtime.h, crt/, nvrtc.h of CUDA $CUDART12_VERSION (one -I)."
    echo "export CUDA12_INCLUDE='$CACHE/include12'"
    echo "# libcudart.so.12, libnvrtc.so.12, libcudart_static.a, libnvvm.so: LD_LIBRARY_PATH at run time."
    echo "export CUDA12_LIB='$CACHE/lib12'"
    echo "# libcudart.so, libnvrtc.so -> the .12 files: -L at link time."
    echo "export CUDA12_LINK='$CACHE/link'"
    echo "export CUDA13_INCLUDE='$CU13/include'"
    echo "export CUDA13_LIB='$CU13/lib'"
    echo "export CUDA13_LINK='$CACHE/link13'"
    echo "export CUDA13_BIN='$CU13/bin'"
    echo "# nvcc $NVCC_RELEASE. Static cudart (default): \$NVCC13 -arch=compute_80 -code=compute_80 x.cu -o x"
    echo "# Shared: add -cudart shared -L\$CUDA13_LINK, run with LD_LIBRARY_PATH=\$CUDA13_LIB."
    echo "export NVCC13='$NVCC13'"
    if [[ -f "$CACHE/py/.stamp" ]]; then
        echo "# CuPy, numba-cuda, numpy (+ CUDA 12 wheels) for $("$PYTHON" -c 'import sys; print(sys.executable)'): PYTHONPATH=\$CUDA_PY."
        echo "export CUDA_PY='$CACHE/py'"
    fi
    if [[ -f "$CACHE/nvml/.stamp" ]]; then
        echo "# pynvml (nvidia-ml-py), for the NVML stand-in's tests: PYTHONPATH=\$NVML_PY."
        echo "export NVML_PY='$CACHE/nvml'"
    fi
    if [[ -f "$CACHE/suites/.stamp" ]]; then
        echo "# pytest and what the clients' test suites import (client-suites.sh): PYTHONPATH=\$SUITES_PY."
        echo "export SUITES_PY='$CACHE/suites'"
    fi
    if [[ -f "$CACHE/cupy-tests/.stamp" ]]; then
        echo "# CuPy's own tests/ from its sdist (client-suites.sh cupy)."
        echo "export CUPY_TESTS='$CACHE/cupy-tests'"
    fi
    if [[ -f "$CACHE/sweep/.stamp" ]]; then
        echo "# Optuna and kubernetes-validate (examples/sweep, deploy/kubernetes): PYTHONPATH=\$SWEEP_PY."
        echo "export SWEEP_PY='$CACHE/sweep'"
    fi
} >"$CACHE/env.sh"

echo "setup-cuda.sh: ${INSTALLED[*]} in $CACHE; cudart $CUDART12_VERSION + $CUDART13_VERSION, nvcc $NVCC_RELEASE; source $CACHE/env.sh"
