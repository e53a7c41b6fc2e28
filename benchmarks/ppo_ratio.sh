#!/usr/bin/env bash
# Issue 33 item 3, measured once: the PPO ratio on the summed log-probs (default) against the per-dimension one of
# before, matinvent on density, band_gap, hhi, seeds 7 8 9, budget 600, raw pipeline (configs/rl_benchmark.yaml),
# 1 torch thread per run; arms interleaved per (task, seed). Resumable: finished runs are skipped.
#   git worktree add ../bench_ppo COMMIT && PYTHONPATH=../bench_ppo/src bash benchmarks/ppo_ratio.sh
# (the package frozen at one commit for the whole set; 2026-12-07: COMMIT = 6653147)
set -euo pipefail
cd "$(dirname "$0")/.."
for task in density band_gap hhi; do
  for seed in 7 8 9; do
    for arm in summed mean; do
      python benchmarks/rl_tasks.py --tasks "$task" --methods matinvent --seeds "$seed" --jobs 1 --no-curves \
        --runs "benchmarks/ppo_ratio_runs/$arm" --set "ppo_ratio=$arm" --name "ppo_ratio_$arm"
    done
  done
done
