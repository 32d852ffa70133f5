#!/usr/bin/env bash
# The headline cells (CNN vs ST-CNN affine, seeds 0-2, recipe adam-tuned-lr3e-3, batch 128) on an
# accelerator, several runs at a time, all stopped with a checkpoint at a deadline:
#
#   experiments/paper/headline_accelerator.sh [SECONDS] [MNIST_DIR]     # defaults: 540, ../shared/data/mnist
#
# In order: RTS at 4M images (32,000 steps), RTS CNN seeds 1-2 at 2M (the half budget that part (b)
# of the convergence rule compares with; the other RTS cells have 2M runs), TC at 2M and at 1M, then
# the TC ST-CNN at 4M (on the CPU two of its three seeds were not converged at 2M), and last the TC
# ST-CNN whose localization net reads the full-resolution input (recipe adam-tuned-lr3e-3-locfull, the
# down-sampled-input ablation) at 2M, at its 1M half budget and at 4M (on the CPU one of its three
# seeds was not converged at 2M).
# Run names end in -4m-acc, -2m-acc, -1m-acc; each run directory holds results.json like every other
# run (its device kind included). The same command again skips finished runs and continues stopped ones.
# PYTHON names the interpreter (default python3); on one GPU, XLA_PYTHON_CLIENT_PREALLOCATE=false
# lets the concurrent runs share its memory (set here unless already set).
set -u
cd "$(dirname "$0")/../.."
SECONDS_BUDGET=${1:-540}
MNIST_DIR=${2:-../shared/data/mnist}
END=$(( $(date +%s) + SECONDS_BUDGET ))
left() { echo $(( END - $(date +%s) )); }
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
V=adam-tuned-lr3e-3
REPRODUCE="${PYTHON:-python3} -m experiments.paper.reproduce --batch-size 128 --data-dir $MNIST_DIR --headline-seeds 1 2"
R="$REPRODUCE --variants $V"
X="-- --eval-every 1000 --checkpoint-every 4000 --no-tensorboard"
status=0
$R --tables rts --steps 32000 --tag 4m-acc --only rts-{cnn,st-cnn-affine}-s{0,1,2}-$V-4m-acc --jobs 6 --deadline-s "$(left)" $X || status=$?
$R --tables rts --steps 16000 --tag 2m-acc --only rts-cnn-s{1,2}-$V-2m-acc --jobs 2 --deadline-s "$(left)" $X &
rts2=$!
$R --tables tc --steps 16000 --tag 2m-acc --only tc-{cnn,st-cnn-affine}-s{0,1,2}-$V-2m-acc --jobs 6 --deadline-s "$(left)" $X || status=$?
wait $rts2 || status=$?
$R --tables tc --steps 8000 --tag 1m-acc --only tc-{cnn,st-cnn-affine}-s{0,1,2}-$V-1m-acc --jobs 6 --deadline-s "$(left)" $X || status=$?
$R --tables tc --steps 32000 --tag 4m-acc --only tc-st-cnn-affine-s{0,1,2}-$V-4m-acc --jobs 3 --deadline-s "$(left)" $X || status=$?
L=adam-tuned-lr3e-3-locfull
$REPRODUCE --variants $L --tables tc --steps 16000 --tag 2m-acc --only tc-st-cnn-affine-s{0,1,2}-$L-2m-acc --jobs 3 --deadline-s "$(left)" $X || status=$?
$REPRODUCE --variants $L --tables tc --steps 8000 --tag 1m-acc --only tc-st-cnn-affine-s{0,1,2}-$L-1m-acc --jobs 3 --deadline-s "$(left)" $X || status=$?
$REPRODUCE --variants $L --tables tc --steps 32000 --tag 4m-acc --only tc-st-cnn-affine-s{0,1,2}-$L-4m-acc --jobs 3 --deadline-s "$(left)" $X || status=$?
exit $status
