#!/usr/bin/env bash
# Alignment v4 and its measurement, resumable (run it again after a stop). From the repository root:
#   git worktree add ../bench_v4 <commit.txt> && PYTHONPATH=../bench_v4/src nohup setsid bash training/align_v4/run.sh &
set -euo pipefail
cd "$(dirname "$0")/../.."
W=training/align_v4
python -m matinvent.cli optimize --task stability --config $W/config.yaml --budget 3000 --seed 0 --out $W/run --resume \
    2>&1 | grep -v '%|' >> $W/log.txt
[ -d $W/mp20_aligned_v4 ] || python -m matinvent.cli save-prior $W/run --out $W/mp20_aligned_v4
python benchmarks/prior_quality.py --priors mp20_masked_max5=mp20_masked@5 mp20_aligned_v4=$W/mp20_aligned_v4 \
    --threads 1 --name prior_quality_aligned_v4
