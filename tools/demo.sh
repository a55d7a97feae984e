#!/usr/bin/env bash
# `make demo`: a newcomer's first run, through the REST API.
#   1. makes two Fashion-MNIST datasets under var/demo-data (classes 0-4 to
#      pretrain on, classes 5-9 to fine-tune on; 32x32 PNGs);
#   2. starts the daemon (build/resnetd serve, data in var/) unless one answers;
#   3. registers both datasets, pretrains from scratch, puts the exported weights
#      into the weights folder, then fine-tunes them (head, then stage:5) and runs
#      the same schedule from random weights for comparison;
#   4. prints the dashboard URL and every curl command it used.
# The daemon keeps running afterwards; stop it with the kill command printed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
listen=${RESNETD_LISTEN:-127.0.0.1:8080}
url="http://$listen"
data="$PWD/var/demo-data"
log="$PWD/var/resnetd.log"
mkdir -p var "$data"

say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; echo; }

for set in pretrain:0,1,2,3,4:300 finetune:5,6,7,8,9:100; do
  IFS=: read -r name classes per <<< "$set"
  if [ ! -d "$data/$name" ]; then
    "$build/tools/fmnist_to_png" "$data/$name" --classes "$classes" --per-class "$per" --size 32 > /dev/null
  fi
done

if curl -sf "$url/api/health" > /dev/null; then
  say "a resnetd already answers at $url: using it"
  pid=""
else
  say "starting the daemon: $build/resnetd serve --listen $listen --data-root $data (log: $log)"
  nohup "$build/resnetd" serve --listen "$listen" --data-root "$data" >> "$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "$url/api/health" > /dev/null && break; sleep 0.1; done
  curl -sf "$url/api/health" > /dev/null || { echo "the daemon did not start; see $log"; tail -5 "$log"; exit 1; }
fi

json() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
post() { curl -s -X POST "$url$1" -H 'Content-Type: application/json' -d "$2"; }
wait_job() { # id
  while :; do
    state=$(curl -s "$url/api/jobs/$1" | json 'd["state"]')
    case $state in completed|failed|cancelled) break ;; esac
    printf '\r  job %s: %s, %s epochs done   ' "$1" "$state" "$(curl -s "$url/api/jobs/$1" | json 'd["epochs_done"]')"
    sleep 2
  done
  echo; echo "  job $1: $state"
  [ "$state" = completed ]
}

say "register the datasets (folders under the data root)"
for name in pretrain finetune; do
  printf "\$ curl -s -X POST $url/api/datasets -H 'Content-Type: application/json' -d '{\"name\": \"fm-%s\", \"path\": \"%s\"}'\n" "$name" "$name"
  post /api/datasets "{\"name\": \"fm-$name\", \"path\": \"$name\"}" | json '"  dataset %s: %s images, classes %s" % (d.get("name"), d.get("report", {}).get("images"), d.get("report", {}).get("classes")) if "error" not in d else "  " + d["error"]["message"]'
done

pretrain='{"name": "demo-pretrain", "dataset": "fm-pretrain", "weights": "random", "preprocess": "torch",
 "input_size": 32, "batch_size": 32, "seed": 1, "augment": {"hflip": true},
 "phases": [{"name": "scratch", "epochs": 4, "train": "all", "bn": "train",
             "optimizer": {"type": "adam", "lr": 0.001}, "lr_schedule": {"type": "cosine", "warmup_epochs": 1}}]}'
say "pretrain from scratch on 5 classes (watch it at $url/)"
echo "\$ curl -s -X POST $url/api/jobs -H 'Content-Type: application/json' -d '$pretrain'"
pre=$(post /api/jobs "$pretrain" | json 'd["id"]')
wait_job "$pre"

weights_dir=var/weights
say "put the pretrained weights where jobs can use them"
run curl -s -o "$weights_dir/demo-pretrained.safetensors" "$url/api/jobs/$pre/weights"
run curl -s "$url/api/weights"

finetune() { # name weights preprocess
  echo "{\"name\": \"$1\", \"dataset\": \"fm-finetune\", \"weights\": \"$2\", \"preprocess\": \"$3\",
 \"input_size\": 32, \"batch_size\": 32, \"seed\": 2,
 \"phases\": [{\"name\": \"head\", \"epochs\": 3, \"train\": \"head\", \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}},
            {\"name\": \"stage5\", \"epochs\": 4, \"train\": \"stage:5\", \"bn\": \"frozen\",
             \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.001, \"momentum\": 0.9}}]}"
}
say "fine-tune on the 5 other classes: head, then stage:5 (and the same from random weights)"
ft_spec=$(finetune demo-finetune demo-pretrained.safetensors auto)
rnd_spec=$(finetune demo-from-random random torch)
echo "\$ curl -s -X POST $url/api/jobs -H 'Content-Type: application/json' -d '$ft_spec'"
ft=$(post /api/jobs "$ft_spec" | json 'd["id"]')
rnd=$(post /api/jobs "$rnd_spec" | json 'd["id"]')
wait_job "$ft" || true
wait_job "$rnd" || true

best() { curl -s "$url/api/jobs/$1/metrics" | json 'max((e["val_acc"] or 0) for e in d["epochs"]) if d["epochs"] else 0'; }
say "result: best val accuracy fine-tuned $(best "$ft"), from random weights $(best "$rnd")"
cat <<EOT

Dashboard:   $url/
Curves:      curl -s $url/api/jobs/$ft/metrics
Per class:   curl -s $url/api/jobs/$ft/classes
Live events: curl -sN $url/api/jobs/$ft/events
Predict:     curl -s -X POST "$url/api/jobs/$ft/predict?top=3" -H 'Content-Type: image/png' --data-binary @$(ls "$data"/finetune/*/*.png | head -1)
EOT
if [ -n "$pid" ]; then echo "Stop:        kill $pid   (the daemon keeps running until then)"; fi
