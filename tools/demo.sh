#!/usr/bin/env bash
# `make demo`: a newcomer's first run, through the REST API.
#   1. makes two Fashion-MNIST datasets under var/demo-data: all ten classes,
#      150 images each from the training file, to pretrain on (the "ImageNet" of
#      this demo); classes 5-9, 60 images each from the t10k file (images the
#      pretraining never saw), 12 to train on and 48 to validate, to fine-tune
#      on: few labels, where pretrained features pay; 32x32 PNGs;
#   2. starts the daemon (build/resnetd serve, data in var/) unless one answers;
#   3. registers both datasets, pretrains from scratch, then fine-tunes the
#      pretraining's exported model ("weights": "job:ID"; head, then stage:5)
#      with three seeds, the pretraining's among them, and runs the same
#      schedule from random weights with the same seeds for comparison;
#   4. prints the mean best val accuracies with the CPU and BLAS kernel, the
#      dashboard URL and every curl command it used.
# DEMO_PRETRAIN_PER_CLASS, DEMO_PRETRAIN_EPOCHS, DEMO_FINETUNE_PER_CLASS and
# DEMO_SEEDS change the sizes.
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

pre_per=${DEMO_PRETRAIN_PER_CLASS:-150}
pre_epochs=${DEMO_PRETRAIN_EPOCHS:-4}
ft_per=${DEMO_FINETUNE_PER_CLASS:-60}
seeds=${DEMO_SEEDS:-1 2 3}
for set in pretrain10:all:$pre_per:train finetune-t10k:5,6,7,8,9:$ft_per:test; do
  IFS=: read -r name classes per split <<< "$set"
  if [ ! -d "$data/$name-$per" ]; then
    "$build/tools/fmnist_to_png" "$data/$name-$per" --classes "$classes" --per-class "$per" \
      --size 32 --split "$split" > /dev/null 2>&1
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

t0=$(date +%s)
say "register the datasets (folders under the data root)"
for set in pretrain10:$pre_per finetune-t10k:$ft_per; do
  IFS=: read -r name per <<< "$set"
  printf "\$ curl -s -X POST $url/api/datasets -H 'Content-Type: application/json' -d '{\"name\": \"fm-%s\", \"path\": \"%s\"}'\n" "$name-$per" "$name-$per"
  post /api/datasets "{\"name\": \"fm-$name-$per\", \"path\": \"$name-$per\"}" | json '"  dataset %s: %s images, classes %s" % (d.get("name"), d.get("report", {}).get("images"), d.get("report", {}).get("classes")) if "error" not in d else "  " + d["error"]["message"]'
done

# BN: "auto" (the default) trains the statistics of random layers and keeps
# those of pretrained ones; preprocess "auto" is torch's for random weights
pretrain="{\"name\": \"demo-pretrain\", \"dataset\": \"fm-pretrain10-$pre_per\", \"weights\": \"random\",
 \"input_size\": 32, \"batch_size\": 32, \"seed\": 1, \"augment\": {\"hflip\": true},
 \"phases\": [{\"name\": \"scratch\", \"epochs\": $pre_epochs, \"train\": \"all\",
             \"optimizer\": {\"type\": \"adam\", \"lr\": 0.001}, \"lr_schedule\": {\"type\": \"cosine\", \"warmup_epochs\": 1}}]}"
say "pretrain from scratch on all 10 classes, $pre_per images each (watch it at $url/)"
echo "\$ curl -s -X POST $url/api/jobs -H 'Content-Type: application/json' -d '$pretrain'"
pre=$(post /api/jobs "$pretrain" | json 'd["id"]')
wait_job "$pre"

finetune() { # name weights seed
  echo "{\"name\": \"$1\", \"dataset\": \"fm-finetune-t10k-$ft_per\", \"weights\": \"$2\", \"seed\": $3,
 \"input_size\": 32, \"batch_size\": 16, \"val_fraction\": 0.8,
 \"phases\": [{\"name\": \"head\", \"epochs\": 5, \"train\": \"head\", \"optimizer\": {\"type\": \"adam\", \"lr\": 0.003}},
            {\"name\": \"stage5\", \"epochs\": 3, \"train\": \"stage:5\",
             \"optimizer\": {\"type\": \"adam\", \"lr\": 0.0001}}]}"
}
say "fine-tune job $pre's model (\"weights\": \"job:$pre\") with a new 5-class head on classes 5-9 of unseen images ($((ft_per / 5)) training images each): head, then stage:5 at a lower rate;"
echo "   the same schedule from random weights; seeds $seeds (the pretraining's seed among them)"
ft_ids=() rnd_ids=()
for seed in $seeds; do
  ft_spec=$(finetune "demo-finetune-s$seed" "job:$pre" "$seed")
  rnd_spec=$(finetune "demo-from-random-s$seed" random "$seed")
  [ ${#ft_ids[@]} -eq 0 ] && echo "\$ curl -s -X POST $url/api/jobs -H 'Content-Type: application/json' -d '$ft_spec'"
  ft_ids+=("$(post /api/jobs "$ft_spec" | json 'd["id"]')")
  rnd_ids+=("$(post /api/jobs "$rnd_spec" | json 'd["id"]')")
done
for id in "${ft_ids[@]}" "${rnd_ids[@]}"; do wait_job "$id" || true; done

best() { curl -s "$url/api/jobs/$1/metrics" | json 'max((e["val_acc"] or 0) for e in d["epochs"]) if d["epochs"] else 0'; }
summary() { # ids...
  for id in "$@"; do best "$id"; done | /usr/bin/python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print("%.2f (%s)" % (sum(v)/len(v), ", ".join("%.2f" % x for x in v)))'
}
ft=${ft_ids[0]}
info=$(curl -s "$url/api/info")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
say "result: best val accuracy, mean over seeds $seeds (each seed's in brackets)"
echo "  fine-tuned from the pretrained weights: $(summary "${ft_ids[@]}")"
echo "  the same schedule from random weights:  $(summary "${rnd_ids[@]}")"
echo "  measured on $cpu, $(nproc) cores, OpenBLAS kernel $(echo "$info" | json 'd["blas_kernel"]'), $(( $(date +%s) - t0 )) s"
cat <<EOT

Dashboard:   $url/
Curves:      curl -s $url/api/jobs/$ft/metrics
Per class:   curl -s $url/api/jobs/$ft/classes
Live events: curl -sN $url/api/jobs/$ft/events
Predict:     curl -s -X POST "$url/api/jobs/$ft/predict?top=3" -H 'Content-Type: image/png' --data-binary @$(ls "$data"/finetune-t10k-$ft_per/*/*.png | head -1)
EOT
if [ -n "$pid" ]; then echo "Stop:        kill $pid   (the daemon keeps running until then)"; fi
