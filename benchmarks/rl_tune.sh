#!/usr/bin/env bash
# Choosing the RL defaults (issue #11): an ablation ladder of the Eq. 17 stabilisers on 4 tasks × 3 seeds
# (1 2 3), budget 300, T = 25, mp20_masked; the benchmark then runs on seeds 7 8 9 it was not tuned on.
#   bash benchmarks/rl_tune.sh            # resumable; tables in benchmarks/results/tune_*.md
set -euo pipefail
cd "$(dirname "$0")/.."
# beta=1.0, epochs=2, ppo_clip=0.0: the ladder ran before these defaults changed (a later --set of a key wins)
common=(--tasks density hhi band_gap bulk_modulus --seeds 1 2 3 --budget 300 --jobs 2 --no-curves --set beta=1.0
  --set epochs=2 --set ppo_clip=0.0)
py=benchmarks/rl_tasks.py
python $py "${common[@]}" --methods prior weighted-denoising matinvent --runs runs/tune/base --name tune_base
python $py "${common[@]}" --methods matinvent --runs runs/tune/norm_mean --name tune_norm_mean \
  --set baseline=normalize --set logp_reduce=mean
python $py "${common[@]}" --methods matinvent --runs runs/tune/ppo --name tune_ppo \
  --set baseline=normalize --set logp_reduce=mean --set ppo_clip=0.2 --set skip_last=2
python $py "${common[@]}" --methods matinvent --runs runs/tune/ppo_natoms --name tune_ppo_natoms \
  --set baseline=normalize --set logp_reduce=mean --set ppo_clip=0.2 --set skip_last=2 --set natoms_action=true
# β 1 → 0.1 (run with --jobs 1 beside the benchmark; the default since 2026-12-01)
python $py "${common[@]}" --methods matinvent --runs runs/tune/beta01 --name tune_beta01 \
  --set baseline=normalize --set logp_reduce=mean --set beta=0.1
# β below 0.1, and the learnt atom count at β = 0.1 (its earlier rung ran at β = 1 with PPO clipping)
python $py "${common[@]}" --methods matinvent --runs runs/tune/beta003 --name tune_beta003 \
  --set baseline=normalize --set logp_reduce=mean --set beta=0.03
python $py "${common[@]}" --methods matinvent --runs runs/tune/beta01_natoms --name tune_beta01_natoms \
  --set baseline=normalize --set logp_reduce=mean --set beta=0.1 --set natoms_action=true
# the validity gate's rejects in the update at reward 0 (rejected_pg: zero)
python $py "${common[@]}" --methods matinvent --runs runs/tune/rejected_zero --name tune_rejected_zero \
  --set baseline=normalize --set logp_reduce=mean --set beta=0.1 --set rejected_pg=zero
# (a "normalize only" rung, runs/tune/norm, was left out for CPU time)
# Cheaper rollouts (the MDP's T): weighted-denoising at 50 and 100 sampler steps vs the 25 of runs/tune/base.
python $py --tasks density hhi --seeds 1 2 3 --budget 300 --jobs 2 --no-curves --methods weighted-denoising \
  --runs runs/tune/steps50 --name tune_steps50 --set sample_steps=50
python $py --tasks density --seeds 1 2 3 --budget 300 --jobs 2 --no-curves --methods weighted-denoising \
  --runs runs/tune/steps100 --name tune_steps100 --set sample_steps=100
# 2026-12-02, at β = 0.1: a larger step (lr 1e-3; stopped after 2 runs for CPU time: density 22, hhi 52 distinct
# hits against 26 and 46) and four PPO-clipped inner epochs per batch (the default since 2026-12-02)
python $py "${common[@]}" --methods matinvent --runs runs/tune/lr1e3 --name tune_lr1e3 --set lr=1.0e-3 \
  --set baseline=normalize --set logp_reduce=mean --set beta=0.1
python $py "${common[@]}" --methods matinvent --runs runs/tune/ppo_ep4 --name tune_ppo_ep4 \
  --set baseline=normalize --set logp_reduce=mean --set beta=0.1 --set epochs=4 --set ppo_clip=0.2
# 2026-12-02 (2nd session), at the 4-epoch default: a tighter diversity filter (Tol, Buff) = (1, 3) and (0, 2)
# against (3, 6) (tune_ppo_ep4); not confirmed on seeds 7-9 yet, so the default stays (3, 6)
for tb in "1 3" "0 2"; do
  set -- $tb
  python $py --tasks bulk_modulus hhi density band_gap --seeds 1 2 3 --budget 300 --jobs 2 --no-curves \
    --methods matinvent --runs runs/tune/df$1_$2 --name tune_df$1_$2 --set df_tol=$1 --set df_buff=$2
done
python benchmarks/saturated_evaluations.py runs/tune/df1_3 runs/tune/df0_2 --name saturated_tune_df
# 2026-12-02 (3rd session), at the (0, 2) default: eight PPO-clipped inner epochs per batch instead of four
# (more optimisation per oracle evaluation; run as two processes of 2 tasks each, 1 run at a time per process)
python $py --tasks density hhi band_gap bulk_modulus --seeds 1 2 3 --budget 300 --jobs 2 --no-curves \
  --methods matinvent --runs runs/tune/ep8 --name tune_ep8 --set epochs=8
# 2026-12-02 (4th session), at the (0, 2) default: beta 0.03, the learnt atom count, top-k 0.25 and beta 0.03 +
# atom count (the last two on density only); beta 0.03 and the atom count then lost on seeds 7-9 (docs/benchmarks.md, 2026-12-03)
d02=(--seeds 1 2 3 --budget 300 --jobs 1 --no-curves --methods matinvent)
d02_4=(--tasks density hhi band_gap bulk_modulus "${d02[@]}")
python $py "${d02_4[@]}" --runs runs/tune/d02_beta003 --name tune_d02_beta003 \
  --set beta=0.03
python $py "${d02_4[@]}" --runs runs/tune/d02_natoms --name tune_d02_natoms \
  --set natoms_action=true
python $py --tasks density "${d02[@]}" --runs runs/tune/d02_topk025 --name tune_d02_topk025 --set topk_ratio=0.25
python $py --tasks density "${d02[@]}" --runs runs/tune/d02_b003_natoms --name tune_d02_b003_natoms \
  --set beta=0.03 --set natoms_action=true
# 2026-12-03: a slower atom-count head (natoms_lr 0.01 instead of 0.05) and a smaller step (lr 3e-4 instead of 5e-4)
python $py "${d02_4[@]}" --runs runs/tune/d02_natoms_lr001 \
  --name tune_d02_natoms_lr001 --set natoms_action=true --set natoms_lr=0.01
python $py "${d02_4[@]}" --runs runs/tune/d02_lr3e4 --name tune_d02_lr3e4 \
  --set lr=3.0e-4
# no experience replay (stopped after 2 runs: fewer hits and a third of the gate pass rate)
python $py "${d02_4[@]}" --runs runs/tune/d02_noreplay --name tune_d02_noreplay \
  --set replay_per_iter=0
