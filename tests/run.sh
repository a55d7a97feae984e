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
#    already ran it; a 1-thread configuration runs on the second core beside the
#    tools' and the dashboard's tests
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

py_exec() { # test.py log: runs it, its exit status into log.rc
  $PY -m unittest -v "$1" > "$2" 2>&1 < /dev/null
  echo $? > "$2.rc"
}

py_count() { # name log
  local name=$1 log=$2 rc ran fails errs bad ok
  rc=$(cat "$log.rc" 2>/dev/null || echo 1)
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

run_py() { # name test.py log
  py_exec "$2" "$3"
  py_count "$1" "$3"
}

# The kernel matrix (step 5): the configurations other than pass 1's.
first=$("$build/resnetd" version | sed -n 's/^blas: OpenBLAS kernel \([^ ]*\) .*, \([0-9]*\) threads.*/\1 \2/p' | head -1)
configs=()
for c in "Haswell 1" "SkylakeX 2"; do
  [ "$c" = "SkylakeX 2" ] && ! { grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo &&
    grep -qw avx512vl /proc/cpuinfo && grep -qw avx512dq /proc/cpuinfo; } && continue
  configs+=("$c")
done
mapfile -t e2e < <(find tests/e2e -name 'test_*.py' | sort)

matrix_exec() { # kernel threads: test_train and tests/e2e into logs tagged KERNEL-THREADS
  local kernel=$1 threads=$2 tag="$1-$2" t
  (
    export OPENBLAS_CORETYPE=$kernel OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
           RESNETD_THREADS=$threads
    log="$build/test-logs/test_train.$tag.log"
    CMOCKA_MESSAGE_OUTPUT=TAP "$build/tests/test_train" > "$log" 2>&1
    echo $? > "$log.rc"
    for t in "${e2e[@]}"; do
      py_exec "$t" "$build/test-logs/$(basename "$t" .py).$tag.log"
    done
  )
}

matrix_count() { # kernel threads
  local tag="$1-$2" log t name
  echo "== kernel matrix: $1, $2 thread(s)"
  log="$build/test-logs/test_train.$tag.log"
  count_tap "test_train [$tag]" "$log" "$(cat "$log.rc" 2>/dev/null || echo 1)"
  for t in "${e2e[@]}"; do
    name=$(basename "$t" .py)
    py_count "$name [$tag]" "$build/test-logs/$name.$tag.log"
  done
}

if [ "$mode" = all ]; then
  echo "== Python tests"
  mapfile -t pytests < <(find tests -name 'test_*.py' -not -path 'tests/tools/*' | sort)
  for t in "${pytests[@]}"; do
    name=$(basename "$t" .py)
    run_py "$name" "$t" "$build/test-logs/$name.log"
  done
  # A 1-thread configuration of the matrix leaves the second core idle: it runs
  # beside the tools' and the dashboard's tests, which are light on CPU; its
  # results are counted below, once it has ended.
  background=()
  for c in "${configs[@]}"; do
    read -r kernel threads <<< "$c"
    if [ "$c" != "$first" ] && [ "$threads" = 1 ] && [ "$(nproc)" -gt 1 ]; then
      matrix_exec "$kernel" "$threads" &
      background+=("$c")
    fi
  done
  mapfile -t pytests < <(find tests/tools -name 'test_*.py' | sort)
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
  wait
  for c in "${configs[@]}"; do
    read -r kernel threads <<< "$c"
    if [ "$c" = "$first" ]; then
      echo "== kernel matrix: $kernel, $threads thread(s): pass 1 ran it"
      continue
    fi
    [[ " ${background[*]} " == *" $c "* ]] || matrix_exec "$kernel" "$threads"
    matrix_count "$kernel" "$threads"
  done
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "Failures:"; printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
