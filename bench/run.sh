#!/usr/bin/env bash
# `make bench`: resnetd and PyTorch (Debian's python3-torch, 2 threads,
# channels_last, fp32) run the same ResNet50 work in one run, side by side.
# Prints a table with images/s, peak memory and ratios (resnetd / PyTorch), and
# writes the same results to bench/last.json.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
PY=/usr/bin/python3
steps=${BENCH_STEPS:-4}
rounds=${BENCH_ROUNDS:-2}   # interleaved rounds; the best of each side is kept
cases=(
  "train_224_b16 train 224 16"
  "train_64_b32 train 64 32"
  "infer_224_b16 infer 224 16"
)
results=()
printf '%-15s %14s %14s %7s %12s %12s %7s\n' case "resnetd img/s" "pytorch img/s" ratio "resnetd MiB" "pytorch MiB" "mem"
for c in "${cases[@]}"; do
  read -r name mode size batch <<< "$c"
  ours='' theirs=''
  for _ in $(seq "$rounds"); do
    ours+=$("$build/bench/bench_train" --mode "$mode" --size "$size" --batch "$batch" --steps "$steps" --threads 2)$'\n'
    theirs+=$($PY bench/torch_bench.py --mode "$mode" --size "$size" --batch "$batch" --steps "$steps" --threads 2)$'\n'
  done
  row=$($PY - "$name" "$ours" "$theirs" <<'PYEOF'
import json, sys
def best(lines):
    runs = [json.loads(l) for l in lines.splitlines() if l.strip()]
    top = max(runs, key=lambda r: r["images_per_s"])
    top["runs_images_per_s"] = [r["images_per_s"] for r in runs]
    return top
name, a, b = sys.argv[1], best(sys.argv[2]), best(sys.argv[3])
r = {"case": name, "resnetd": a, "pytorch": b,
     "speed_ratio": round(a["images_per_s"] / b["images_per_s"], 3),
     "memory_ratio": round(a["peak_rss_mib"] / b["peak_rss_mib"], 3)}
print(json.dumps(r))
PYEOF
)
  results+=("$row")
  $PY -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-15s %14.2f %14.2f %7.2f %12.0f %12.0f %7.2f" % (r["case"], r["resnetd"]["images_per_s"], r["pytorch"]["images_per_s"], r["speed_ratio"], r["resnetd"]["peak_rss_mib"], r["pytorch"]["peak_rss_mib"], r["memory_ratio"]))' "$row"
done
# the loader: a Fashion-MNIST class-folder set made by the tool (10 classes x 200)
data="$build/bench-data/fmnist-64"
if [ ! -d "$data" ]; then
  mkdir -p "$(dirname "$data")"
  "$build/tools/fmnist_to_png" "$data" --classes all --per-class 200 --size 64 > /dev/null
fi
loader=$("$build/bench/bench_loader" --data "$data" --size 64 --batch 32 --train-steps 8)
$PY -c 'import json,sys; r=json.loads(sys.argv[1]); print("\nloader (%d images %dx%d, batch %d): %.0f img/s decoded+preprocessed on 1 thread, %.0f on 2, %.0f from the cache; %d training steps waited %.1f%% of %.1f s for data; one 500x375 image to a 224 centre crop: resize %.2f ms, crop + caffe %.2f ms" % (r["images"], r["size"], r["size"], r["batch"], r["decode_images_per_s_1_thread"], r["decode_images_per_s_2_threads"], r["cached_images_per_s"], r["train_steps"], 100 * r["waiting_share"], r["train_seconds"], r["preprocess_224_resize_ms"], r["preprocess_224_crop_caffe_ms"]))' "$loader"

# frozen training: resnetd computes the frozen part once per image (second epoch of
# a phase), PyTorch runs the whole forward every step (its naive frozen training)
frozen=()
for sel in head stage5; do
  train=$([ "$sel" = head ] && echo head || echo stage:5)
  cat > "$build/bench-data/frozen-$sel.json" <<JSON
{"dataset": "$(realpath "$data")", "weights": "random", "preprocess": "torch", "input_size": 64,
 "batch_size": 32, "seed": 1, "val_fraction": 0.1,
 "phases": [{"epochs": 2, "train": "$train", "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9}}]}
JSON
  ours=$("$build/resnetd" train "$build/bench-data/frozen-$sel.json" 2>/dev/null | grep '^epoch 2/2' | sed 's/.* \([0-9.]*\) img\/s.*/\1/')
  theirs=$($PY bench/torch_bench.py --mode train --size 64 --batch 32 --steps "$steps" --threads 2 --freeze "$sel" | $PY -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])')
  frozen+=("{\"case\": \"frozen_${sel}_64_b32\", \"resnetd_cached_epoch_images_per_s\": $ours, \"pytorch_images_per_s\": $theirs, \"speed_ratio\": $($PY -c "print(round($ours / $theirs, 2))")}")
  printf '%-15s %14.1f %14.1f %7.2f   (resnetd: 2nd epoch of a %s phase, frozen part cached; PyTorch: full forward each step)\n' "frozen_$sel" "$ours" "$theirs" "$($PY -c "print($ours / $theirs)")" "$train"
done

# the daemon's read path: GET /api/jobs/ID/metrics from 32 clients while a job trains
load=$($PY bench/api_load.py "$build" --clients 32 --seconds 10)
$PY -c 'import json,sys; r=json.loads(sys.argv[1]); print("\nAPI load (%d clients, GET /api/jobs/ID/metrics while a job trains): %.0f requests/s, p50 %.1f ms, p99 %.1f ms, %d errors; training %.0f img/s alone, %.0f img/s under that load" % (r["clients"], r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["errors"], r["train_images_per_s_alone"], r["train_images_per_s_under_load"]))' "$load"

{
  echo '{"blas_kernel": "'"$("$build/resnetd" version | sed -n 's/^blas: OpenBLAS kernel \([^ ]*\).*/\1/p')"'", "steps": '"$steps"', "rounds": '"$rounds"', "cases": ['
  for i in "${!results[@]}"; do
    [ "$i" -gt 0 ] && echo ","
    echo "${results[$i]}"
  done
  echo '], "frozen": ['"$(IFS=,; echo "${frozen[*]}")"'], "loader": '"$loader"', "api_load": '"$load"'}'
} > bench/last.json
echo "wrote bench/last.json (ratio = resnetd / PyTorch; speed > 1 and memory < 1 favour resnetd)"
