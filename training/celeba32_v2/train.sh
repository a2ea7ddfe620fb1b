#!/bin/sh
# The embedded model v2 (shipped: step 31,250's EMA, 1M images, plus a mean correction; issue 15): 32×32, 32 channels (mult 1,2,2), 8 GroupNorm groups,
# learned σ, CelebA centre-cropped to 140. Run from the repository root; needs
# ../shared/data/celeba/{train,val}. Continue the committed run with:
#   training/celeba32_v2/train.sh --resume                       # flex, any machine
#   training/celeba32_v2/train.sh --resume --backend libtorch    # ≈ 2.6× faster, see docs/backends.md
# A flag given again overrides the script's (the last one wins), e.g. --steps 33000 to stop there.
# TWEEDIE picks the binary (default target/release/tweedie; for LibTorch, a build with
# --features libtorch and torch's lib folder on LD_LIBRARY_PATH). Leave OMP_WAIT_POLICY unset
# when training has the machine to itself: on 2 cores it ran at 56 img/s against 34 with
# OMP_WAIT_POLICY=PASSIVE, same sitting (session 13); PASSIVE only helps beside other work.
# The checkpoint, loss.csv and eval.csv in this folder are updated in place: commit them to
# hand the run on.
set -e
exec "${TWEEDIE:-target/release/tweedie}" train \
  --data ../shared/data/celeba/train --val ../shared/data/celeba/val \
  --size 32 --crop 140 --channels 32 --mult 1,2,2 --attention 16,8 --norm-groups 8 --learn-sigma \
  --batch 32 --lr 2e-4 --warmup 500 --ema 0.9995 --steps 40000 \
  --checkpoint-every 500 --eval-every 500 --eval-samples 128 --eval-sample-steps 50 \
  --log-every 100 --seed 0 --out training/celeba32_v2 "$@"
