#!/bin/sh
# Measure the run's current checkpoint as a candidate for the embedded model, as the model card
# measures the shipped one (issue 15). Run from the repository root, between two checkpoints
# (the EMA is copied first, so training may go on); needs ../shared/data/celeba/{train,val}.
#   training/celeba32_v2/candidate.sh OUT
# Writes OUT/model.safetensors (the checkpoint's EMA) and OUT/model.json (its config with the
# mean correction fitted on 1,024 chains, as shipped), OUT/seed{0,1}/ (1,024 samples each),
# OUT/fd_seed{0,1}_{train,val}.json, OUT/memorisation.json and OUT/evaluate/evaluation.json.
# To ship it: copy OUT/model.safetensors and OUT/model.json into assets/, rebuild, and
# regenerate docs/model (evaluate) and the report (cargo xtask run-all --out docs/report).
# TWEEDIE picks the binary (default target/release/tweedie) and BACKEND the backend (default
# libtorch, see train.sh); SEEDS the sample seeds (default "0 1"). For a quick check of the
# script itself, FIT_N, CHAINS and N shrink the line fit (default 0: all training faces), the
# fitting chains (1024) and the samples per seed (1024), and DATA replaces ../shared/data/celeba
# (a folder with train/ and val/); numbers from such a run mean nothing.
set -e
out=${1:?usage: candidate.sh OUT}
t=${TWEEDIE:-target/release/tweedie}
backend=${BACKEND:-libtorch}
data=${DATA:-../shared/data/celeba}
run=training/celeba32_v2
seeds=${SEEDS:-0 1}
[ ! -e "$out" ] || { echo "candidate.sh: $out exists; give a new folder" >&2; exit 2; }
mkdir -p "$out"
cp "$run/checkpoint/ema.safetensors" "$out/model.safetensors"
cp "$run/checkpoint/complete.json" "$out/checkpoint.json"
# The architecture is the shipped model's (fit-mean drops the table it carries and fits anew).
"$t" fit-mean --backend "$backend" --model "$out/model.safetensors" --config assets/model.json \
  --data "$data/train" --crop 140 --n "${FIT_N:-0}" --rule variance \
  --chains "${CHAINS:-1024}" --chain-steps 100 --variance beta --chain-variance --out "$out/fit"
cp "$out/fit/model.json" "$out/model.json"
for seed in $seeds; do
  "$t" generate --backend "$backend" --model "$out/model.safetensors" --config "$out/model.json" \
    --n "${N:-1024}" --batch 64 --steps 100 --variance beta --seed "$seed" --out "$out/seed$seed"
  for set in train val; do
    "$t" fd "$out/seed$seed" "$data/$set" --crop-b 140 --backend "$backend" \
      --json "$out/fd_seed${seed}_$set.json"
  done
done
first=${seeds%% *}
mkdir -p "$out/first256"
ls "$out/seed$first" | grep '^sample_' | sort | head -n 256 | while read -r f; do
  cp "$out/seed$first/$f" "$out/first256/"
done
"$t" memorisation "$out/first256" --train "$data/train" --val "$data/val" --crop 140 \
  --backend "$backend" --json "$out/memorisation.json" --pairs-png "$out/memorisation_pairs.png"
"$t" evaluate --backend "$backend" --model "$out/model.safetensors" --config "$out/model.json" \
  --val "$data/val" --train "$data/train" --crop 140 --sample-steps 250 --out "$out/evaluate"
