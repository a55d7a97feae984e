#!/usr/bin/env bash
# Runs every test and ends with the line "N passed, N failed".
#   tests/run.sh BUILD_DIR [unit]
# 1. the PyTorch oracle writes reference data into BUILD_DIR/ref (tests/reference/*.py)
# 2. every C unit test binary BUILD_DIR/tests/test_* runs (cmocka, TAP output)
# 3. every Python test tests/**/test_*.py runs under Debian's python3 (unittest)
# 4. every web test tests/web/test_*.mjs runs under node --test (headless Chromium)
# 5. the kernel matrix: the training and diagnosis tests (test_train and
#    tests/e2e/) again under another OpenBLAS kernel and thread count, since a
#    training trajectory depends on the summation order: Haswell with 1 thread,
#    and SkylakeX with 2 threads where the CPU has AVX-512, each unless pass 1
#    already ran it
# "unit" runs 1 and 2 only (used by `make asan`).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
mode=${2:-all}
PY=/usr/bin/python3
# reference data depend only on the Python oracle, not on the C build flags
export RESNETD_REF_DIR="$PWD/build/ref"
export RESNETD_BUILD_DIR="$PWD/$build"
mkdir -p "$RESNETD_REF_DIR" "$build/test-logs"
passed=0
failed=0
failures=()

count_tap() { # name logfile rc
  local name=$1 log=$2 rc=$3 ok bad
  ok=$(grep -c '^ok ' "$log")
  bad=$(grep -c '^not ok ' "$log")
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1  # crashed or failed outside a test case
    failures+=("$name (exit $rc, see $log)")
  fi
  grep '^not ok ' "$log" | sed "s|^|$name: |" | while read -r l; do echo "  FAIL $l"; done
  if grep -q '^not ok ' "$log"; then failures+=("$name (see $log)"); fi
  passed=$((passed + ok))
  failed=$((failed + bad))
  printf '%-28s %3d passed, %d failed\n' "$name" "$ok" "$bad"
}

echo "== reference data (PyTorch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing))"
for gen in tests/reference/make_*.py; do
  log="$build/test-logs/$(basename "$gen" .py).log"
  if ! $PY "$gen" "$RESNETD_REF_DIR" > "$log" 2>&1; then
    echo "  FAIL $gen, see $log"
    tail -n 20 "$log"
    failed=$((failed + 1))
    failures+=("$gen")
  fi
done

echo "== C unit tests"
for bin in "$build"/tests/test_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  log="$build/test-logs/$name.log"
  CMOCKA_MESSAGE_OUTPUT=TAP "$bin" > "$log" 2>&1
  count_tap "$name" "$log" $?
done

run_py() { # name test.py log
  local name=$1 t=$2 log=$3 rc ran fails errs bad ok
  $PY -m unittest -v "$t" > "$log" 2>&1 < /dev/null
  rc=$?
  # unittest's summary: "Ran N tests" then "OK" or "FAILED (failures=F, errors=E)"
  ran=$(sed -n 's/^Ran \([0-9]*\) tests\?.*/\1/p' "$log" | tail -1)
  fails=$(sed -n 's/^FAILED (.*failures=\([0-9]*\).*/\1/p' "$log" | tail -1)
  errs=$(sed -n 's/^FAILED (.*errors=\([0-9]*\).*/\1/p' "$log" | tail -1)
  bad=$(( ${fails:-0} + ${errs:-0} ))
  ok=$(( ${ran:-0} - bad ))
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
  [ "$bad" -gt 0 ] && { failures+=("$name (see $log)"); grep -E '^(FAIL|ERROR): ' "$log" | sed 's/^/  /'; }
  passed=$((passed + ok)); failed=$((failed + bad))
  printf '%-28s %3d passed, %d failed\n' "$name" "$ok" "$bad"
}

if [ "$mode" = all ]; then
  echo "== Python tests"
  mapfile -t pytests < <(find tests -name 'test_*.py' | sort)
  for t in "${pytests[@]}"; do
    name=$(basename "$t" .py)
    run_py "$name" "$t" "$build/test-logs/$name.log"
  done
fi

if [ "$mode" = all ]; then
  echo "== Web tests (headless Chromium)"
  for t in tests/web/test_*.mjs; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .mjs)
    log="$build/test-logs/$name.log"
    RESNETD_BUILD_DIR="$build" node --test --test-reporter=tap "$t" > "$log" 2>&1 < /dev/null
    rc=$?
    ok=$(grep -cE '^ok [0-9]+ ' "$log")
    bad=$(grep -cE '^not ok [0-9]+ ' "$log")
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    [ "$bad" -gt 0 ] && { failures+=("$name (see $log)"); grep -E '^not ok ' "$log" | sed 's/^/  /'; }
    passed=$((passed + ok)); failed=$((failed + bad))
    printf '%-28s %3d passed, %d failed\n' "$name" "$ok" "$bad"
  done
fi

if [ "$mode" = all ]; then
  # pass 1's kernel and threads, as resnetd reports them ("... kernel X (...), N threads; ...")
  first=$("$build/resnetd" version | sed -n 's/^blas: OpenBLAS kernel \([^ ]*\) .*, \([0-9]*\) threads.*/\1 \2/p' | head -1)
  configs=("Haswell 1")
  if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo &&
     grep -qw avx512vl /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo; then
    configs+=("SkylakeX 2")
  fi
  mapfile -t e2e < <(find tests/e2e -name 'test_*.py' | sort)
  for c in "${configs[@]}"; do
    read -r kernel threads <<< "$c"
    [ "$c" = "$first" ] && { echo "== kernel matrix: $kernel, $threads thread(s): pass 1 ran it"; continue; }
    echo "== kernel matrix: $kernel, $threads thread(s)"
    tag="$kernel-$threads"
    export OPENBLAS_CORETYPE=$kernel OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
           RESNETD_THREADS=$threads
    log="$build/test-logs/test_train.$tag.log"
    CMOCKA_MESSAGE_OUTPUT=TAP "$build/tests/test_train" > "$log" 2>&1
    count_tap "test_train [$tag]" "$log" $?
    for t in "${e2e[@]}"; do
      name=$(basename "$t" .py)
      run_py "$name [$tag]" "$t" "$build/test-logs/$name.$tag.log"
    done
    unset OPENBLAS_CORETYPE OMP_NUM_THREADS OPENBLAS_NUM_THREADS RESNETD_THREADS
  done
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "Failures:"; printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
