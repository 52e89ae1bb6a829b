#!/usr/bin/env bash
# The real path end to end on a CPU: SmolLM2-135M-Instruct fine-tuned on four TOFU authors (original:
# all four; retain: without the last two), a classifier fine-tuned from SmolLM2 and one from scratch,
# DareU forgetting the last two authors, and the TOFU-style report. Each step's wall time goes to
# $W/times.txt. About an hour on 2 idle cores (two hours on a loaded machine). DareU uses the
# classifier trained from scratch: the one fine-tuned from SmolLM2 cannot tell the original's forget
# answers from the retain model's (a_F 0.537 against 0.493), and unlearn.py refuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-bench/work/real_path}
TOFU=${TOFU:-../shared/data/tofu}
mkdir -p "$W"
step() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$W/times.txt"; }
: > "$W/times.txt"
BASE=$(python bench/smollm2.py)
step data python data.py --data "$TOFU" --owners tofu_000,tofu_001,tofu_198,tofu_199 --write "$W/tofu4.jsonl"
step original python finetune.py --model "$BASE" --data "$W/tofu4.jsonl" --out "$W/original" \
    --epochs 4 --lr 2e-4 --batch-size 8
step retain python finetune.py --model "$BASE" --data "$W/tofu4.jsonl" --exclude tofu_198,tofu_199 --out "$W/retain" \
    --epochs 4 --lr 2e-4 --batch-size 8
step classifier python attribution.py --data "$W/tofu4.jsonl" --base "$BASE" --out "$W/classifier" \
    --epochs 2 --lr 1e-4 --batch-size 8 --heldout 0.25
step classifier_scratch python attribution.py --data "$W/tofu4.jsonl" --out "$W/classifier_scratch" --heldout 0.25
step unlearn python unlearn.py --model "$W/original" --data "$W/tofu4.jsonl" --forget tofu_198,tofu_199 \
    --classifier "$W/classifier_scratch" --retain-model "$W/retain" --out "$W/dareu" \
    --prompts-per-iter 8 --iterations 12 --eval-every 3 --eval-max-questions 20 --eval-max-new-tokens 100 --sample-every 3
step evaluate python evaluate.py --model "$W/original" --model "$W/dareu" --retain-model "$W/retain" \
    --data "$W/tofu4.jsonl" --forget tofu_198,tofu_199 --classifier "$W/classifier_scratch" --out "$W/eval.json" \
    --max-new-tokens 80 --max-questions 20
