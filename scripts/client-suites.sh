#!/usr/bin/env bash
# Runs the clients' own test suites, unmodified, on the emulated GPU: every test module under its
# own `remora run` (so one module's sticky CUDA error cannot fail the next) with a time limit.
#
#   scripts/client-suites.sh [numba|cupy|samples|all] [--quick] [--timeout SECS] [--devices N]
#                            [--no-setup]
#
#   numba    numba-cuda's tests, from its wheel (all 160 modules; --quick: tests/suites/numba-quick.txt)
#   cupy     ten files of CuPy's tests, from CuPy's sdist (tests/suites/cupy-files.txt)
#   samples  NVIDIA's cuda-python samples: no PyPI package ships them, so they run only from a
#            cuda-python checkout named by CUDA_PYTHON_SAMPLES (its cuda_bindings/examples)
#
# Prints a table (module, passed, failed, skipped, errors, timed out) with totals and the pass
# rate, and the most frequent failure messages; all of it is kept in
# target/client-suites/SUITE/summary.txt beside each module's log and JUnit report. Exits 1
# when anything failed or timed out. Defaults: all, --timeout 300, --devices 1. --no-setup skips
# setup-cuda.sh and the build (tests/tests/client_suites.rs, under scripts/test.sh, which did both).
# SUITE_MODULES="cudapy/test_ipc.py ..." runs only those numba modules.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUITE=all
QUICK=0
TIMEOUT=300
DEVICES=1
SETUP=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        numba | cupy | samples | all) SUITE="$1" ;;
        --quick) QUICK=1 ;;
        --timeout) TIMEOUT="$2" && shift ;;
        --devices) DEVICES="$2" && shift ;;
        --no-setup) SETUP=0 ;;
        -h | --help)
            sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "client-suites.sh: unknown argument '$1' (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done

if [[ $SETUP == 1 ]]; then
    if [[ $SUITE == cupy || $SUITE == all ]]; then
        bash scripts/setup-cuda.sh --cupy-tests
    else
        bash scripts/setup-cuda.sh --python
    fi
    nice cargo build --locked -p remora -p remora-shim -p remora-nvjitlink-off -p remora-nvrtc -p remora-nvrtc13 -p remora-nvml
fi
# shellcheck source=/dev/null
source .cache/cuda/env.sh
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REMORA="$TARGET/debug/remora"
SUITES="$ROOT/tests/suites"
# Real paths: pytest names modules after their real path relative to its rootdir.
NUMBA_ROOT="$(readlink -f "$CUDA_PY/numba_cuda")"
NUMBA_TESTS="$NUMBA_ROOT/numba/cuda/tests"

OUT="$TARGET/client-suites"
RUN="$OUT/$SUITE"
[[ $QUICK == 0 ]] || RUN="$RUN-quick"
rm -rf "$RUN"
mkdir -p "$RUN"
: >"$RUN/modules.tsv"

# CuPy and numba compile with NVRTC and look for headers under $CUDA_PATH/include: CUDA's own
# and CCCL's (numba's runtime includes <cuda/atomic>), which come in separate wheels.
# Links replaced in place, not the folder, as another suite's run may be reading it.
CUDA_PATH="$OUT/cuda-path"
mkdir -p "$CUDA_PATH/include"
for entry in "$CUDA12_INCLUDE"/* "$CUDA_PY"/nvidia/cuda_cccl/include/*; do
    [[ "$(basename "$entry")" != __* ]] || continue
    ln -sfn "$(readlink -f "$entry")" "$CUDA_PATH/include/$(basename "$entry")"
done
export CUDA_PATH
# NVIDIA's nvJitLink findable, as in an ordinary install (`remora run` steers numba past it).
export LD_LIBRARY_PATH="$CUDA12_LIB:$CUDA_PY/nvidia/nvjitlink/lib"
# NUMBA_CACHE_DIR stays unset: numba's caching tests look for the cache beside their modules.
export CUPY_CACHE_DIR="$OUT/cupy-cache"
# Every Python process, the tests' own children included, sees the clients and pytest as
# installed (tests/suites/sitecustomize.py), and the plugin beside it.
export PYTHONPATH="$SUITES" REMORA_SUITE_SITES="$CUDA_PY:$SUITES_PY"

# run_module NAME DIR CMD... : runs CMD in DIR under its own `remora run` and time limit.
run_module() {
    local name="$1" dir="$2"
    shift 2
    local start status=0
    start=$(date +%s)
    (cd "$dir" && timeout -k 10 "$TIMEOUT" nice "$REMORA" run --devices "$DEVICES" -- "$@") \
        >"$RUN/$name.log" 2>&1 || status=$?
    local seconds=$(($(date +%s) - start))
    printf '%s\t%s\t%s\n' "$name" "$status" "$seconds" >>"$RUN/modules.tsv"
    printf 'client-suites.sh: %-60s exit %3s  %4ss\n' "$name" "$status" "$seconds" >&2
}

# pytest_module NAME DIR PYTEST_ARGS... : one pytest run, verbose (a module killed at its limit
# is counted from its log) and with a JUnit report.
pytest_module() {
    local name="$1" dir="$2"
    shift 2
    run_module "$name" "$dir" python3 -m pytest -p no:cacheprovider -v -rfE \
        --junitxml="$RUN/$name.xml" "$@"
}

# list FILE : the non-comment lines of FILE.
list() { grep -v '^\s*\(#\|$\)' "$1"; }

run_numba() {
    local modules
    if [[ -n "${SUITE_MODULES:-}" ]]; then
        modules="$SUITE_MODULES"
    elif [[ $QUICK == 1 ]]; then
        modules="$(list "$SUITES/numba-quick.txt")"
    else
        modules="$(cd "$NUMBA_TESTS" && find . -name 'test_*.py' | sed 's|^\./||' | sort)"
    fi
    local module name
    for module in $modules; do
        name="numba.$(sed 's|/|.|g; s|\.py$||' <<<"$module")"
        # numba's test modules live inside the installed package (numba_cuda/numba/cuda/tests,
        # which a finder installed by a .pth file makes numba.cuda.tests). importlib mode with
        # namespace packages considered imports each under its real name, so that numba.cuda
        # is not imported a second time, and the processes a test spawns can unpickle what it
        # sends them. From $RUN, where hypothesis and pytest-benchmark keep their files.
        pytest_module "$name" "$RUN" -p numba_cuda_fixtures --import-mode=importlib \
            -o consider_namespace_packages=true --rootdir="$NUMBA_ROOT" "$NUMBA_TESTS/$module"
    done
}

run_cupy() {
    local file name
    for file in $(list "$SUITES/cupy-files.txt"); do
        name="cupy.$(sed 's|^tests/cupy_tests/||; s|/|.|g; s|\.py$||' <<<"$file")"
        # With the sdist's pyproject.toml (markers, warnings filters) and tests/conftest.py, as
        # in CuPy's own CI; from $RUN, where hypothesis keeps its database.
        pytest_module "$name" "$RUN" --rootdir="$CUPY_TESTS" -c "$CUPY_TESTS/pyproject.toml" \
            "$CUPY_TESTS/$file"
    done
}

run_samples() {
    if [[ -z "${CUDA_PYTHON_SAMPLES:-}" ]]; then
        echo "client-suites.sh: samples: no PyPI package ships NVIDIA's cuda-python samples" \
            "(cuda-python and cuda-bindings publish wheels only, without examples/); set" \
            "CUDA_PYTHON_SAMPLES to the cuda_bindings/examples folder of a cuda-python checkout" >&2
        return
    fi
    # The samples' helpers need cuda-bindings 13 (with 12.9, the setup's, vectorAddDrv and
    # jit_program fail in cuda-bindings itself); installed once into a folder of their own,
    # first on their PYTHONPATH only.
    local samples_py="$CUDA_CACHE/samples-py"
    if [[ ! -d "$samples_py/cuda/bindings" ]]; then
        python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$samples_py" \
            cuda-bindings==13.5.0 cuda-pathfinder==1.4.2 >&2
    fi
    local names name path
    while read -r -a names; do
        path=""
        for name in "${names[@]}"; do
            path="$(find "$CUDA_PYTHON_SAMPLES" -name "$name" | head -n1)"
            [[ -z "$path" ]] || break
        done
        name="sample.${names[0]%.py}"
        name="${name%_test}"
        if [[ -z "$path" ]]; then
            echo "client-suites.sh: samples: none of ${names[*]} in $CUDA_PYTHON_SAMPLES" >&2
            printf '%s\t%s\t%s\n' "$name" 127 0 >>"$RUN/modules.tsv"
            continue
        fi
        # As NVIDIA runs them: from their folder, with the examples folder importable (its
        # pytest.ini: pythonpath = .), so that `from common import common` finds common/ as a
        # package. Not common/ itself: its common.py would shadow the package.
        run_module "$name" "$(dirname "$path")" env \
            PYTHONPATH="$SUITES:$samples_py:$CUDA_PYTHON_SAMPLES" python3 "$path"
    done < <(list "$SUITES/samples.txt")
}

case "$SUITE" in
    numba) run_numba ;;
    cupy) run_cupy ;;
    samples) run_samples ;;
    all) run_numba && run_cupy && run_samples ;;
esac
python3 "$SUITES/summarize.py" "$RUN" --causes 15
