#!/usr/bin/env bash
# Pretrained features on real data, end to end with resnetd train:
#   1. pretrain from scratch on Fashion-MNIST at 32x32 (classes 5-9 of the train
#      file; PRETRAIN_CLASSES=0,1,2,3,4 pretrains on the five other classes), export;
#   2. fine-tune on few labels of other images of classes 5-9 (from the t10k file;
#      a fifth of them to train on, the rest to validate): head phase, then
#      stage:5 at a lower rate, from those weights, with the pretraining's own
#      seed (its new head must not be the pretraining's initial head);
#   3. the same schedule from random weights, for comparison.
# BN is left at "auto": pretrained layers keep their statistics, random ones
# learn theirs.
# Every run is recorded in OUT_DIR/acceptance.db (resnetd train --db).
# Usage: tools/fmnist_acceptance.sh [BUILD_DIR] [OUT_DIR]
set -euo pipefail
build=${1:-build}
out=${2:-$build/acceptance}
per_pre=${PER_PRETRAIN:-400}
per_ft=${PER_FINETUNE:-100}
pre_epochs=${PRETRAIN_EPOCHS:-4}
rm -rf "$out" && mkdir -p "$out"
pre_classes=${PRETRAIN_CLASSES:-5,6,7,8,9}
"$build/tools/fmnist_to_png" "$out/pre" --classes "$pre_classes" --per-class "$per_pre" --size 32 > /dev/null
"$build/tools/fmnist_to_png" "$out/ft" --classes 5,6,7,8,9 --per-class "$per_ft" --size 32 --split test > /dev/null
cat > "$out/pretrain.json" <<JSON
{"name": "fmnist-pretrain", "dataset": "$out/pre", "weights": "random",
 "input_size": 32, "batch_size": 32, "seed": 1, "augment": {"hflip": true},
 "phases": [{"name": "scratch", "epochs": $pre_epochs, "train": "all",
             "optimizer": {"type": "adam", "lr": 0.001},
             "lr_schedule": {"type": "cosine", "warmup_epochs": 1}}]}
JSON
finetune() { # name weights
  cat > "$out/$1.json" <<JSON
{"name": "$1", "dataset": "$out/ft", "weights": "$2",
 "input_size": 32, "batch_size": 16, "seed": 1, "val_fraction": 0.8,
 "phases": [{"name": "head", "epochs": 5, "train": "head",
             "optimizer": {"type": "adam", "lr": 0.003}},
            {"name": "stage5", "epochs": 3, "train": "stage:5",
             "optimizer": {"type": "adam", "lr": 0.0001}}]}
JSON
}
echo "== pretrain (classes $pre_classes, $per_pre images each, $pre_epochs epochs)"
"$build/resnetd" train "$out/pretrain.json" --db "$out/acceptance.db" --export "$out/pretrained.safetensors" | tee "$out/pretrain.log" | grep -v '^  per stage'
finetune finetune "$out/pretrained.safetensors"
finetune scratch random
echo "== fine-tune from the pretrained weights (classes 5-9: $per_ft other images each, from the t10k file, a fifth to train on)"
"$build/resnetd" train "$out/finetune.json" --db "$out/acceptance.db" | tee "$out/finetune.log" | grep -v '^  per stage'
echo "== the same schedule from random weights"
"$build/resnetd" train "$out/scratch.json" --db "$out/acceptance.db" | tee "$out/scratch.log" | grep -v '^  per stage'
best() { grep -o 'val loss [0-9.]* acc [0-9.]*' "$1" | awk '{print $5}' | sort -g | tail -1; }
echo "best val accuracy: fine-tuned $(best "$out/finetune.log"), from random $(best "$out/scratch.log")"
ips() { grep "\[head\]" "$1" | sed -n "$2p" | grep -o '[0-9.]* img/s' | awk '{print $1}'; }
echo "head phase of the fine-tuning: $(ips "$out/finetune.log" 1) img/s in its first epoch," \
     "$(ips "$out/finetune.log" 3) img/s in its last (frozen part cached)"
