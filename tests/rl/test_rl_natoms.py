"""The atom count N as a learnable action (``NatomsPolicy``): exact categorical, masked support, KL, and learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from rl_toy import save_tiny_prior
from torch.distributions import Categorical, kl_divergence

from matinvent.oracles import Oracle
from matinvent.prior.checkpoint import load_prior
from matinvent.rl import RLConfig, optimize
from matinvent.rl.natoms import NatomsPolicy
from matinvent.scoring.scorer import Scorer
from matinvent.scoring.tasks import task_from_dict

HIST = torch.tensor([0.0, 0.0, 3.0, 1.0, 0.0, 4.0], dtype=torch.float64)  # support {2, 3, 5}; 4 never seen
SUPPORT = [2, 3, 5]


def test_log_prob_is_the_renormalised_prior_histogram():
    pol = NatomsPolicy(HIST)
    ref = Categorical(probs=HIST / HIST.sum())
    n = pol.sample(200, torch.Generator().manual_seed(0))
    torch.testing.assert_close(pol.log_prob(n), ref.log_prob(n).float())
    torch.testing.assert_close(pol.probs(), (HIST / HIST.sum()).float())


def test_counts_outside_the_support_are_impossible_and_never_drawn():
    pol = NatomsPolicy(HIST)
    assert torch.isneginf(pol.log_prob(torch.tensor([0, 1, 4]))).all()
    with torch.no_grad():
        pol.logits.add_(torch.randn(pol.logits.shape, generator=torch.Generator().manual_seed(1)) * 3)
        pol.logits[4] = 50.0  # a huge logit off the support changes nothing
    assert torch.isneginf(pol.log_prob(torch.tensor([0, 1, 4]))).all()
    n = pol.sample(5000, torch.Generator().manual_seed(0))
    assert set(n.tolist()) == set(SUPPORT)
    freq = torch.bincount(n, minlength=6).double() / len(n)
    torch.testing.assert_close(freq, pol.probs().double(), atol=0.03, rtol=0)  # draws follow probs()


def test_kl_is_zero_at_the_prior_and_the_exact_categorical_kl_after_a_change():
    pol = NatomsPolicy(HIST)
    assert abs(float(pol.kl().detach())) < 1e-6
    with torch.no_grad():
        pol.logits.add_(torch.randn(pol.logits.shape, generator=torch.Generator().manual_seed(2)))
    p = pol.probs().detach().double()[SUPPORT]
    q = (HIST / HIST.sum())[SUPPORT]
    expected = kl_divergence(Categorical(probs=p), Categorical(probs=q))
    kl = pol.kl()
    assert float(kl.detach()) > 1e-3
    assert float(kl.detach()) == pytest.approx(float(expected), rel=1e-4)
    kl.backward()  # differentiable, and only the support's logits get a gradient
    assert bool((pol.logits.grad[SUPPORT] != 0).all()) and bool((pol.logits.grad[[0, 1, 4]] == 0).all())


def test_an_empty_histogram_is_an_error():
    with pytest.raises(ValueError, match="histogram is empty"):
        NatomsPolicy(torch.zeros(6))


# --- end to end: a reward that prefers large N moves the learnt histogram ---------------------------------
class AtomCount(Oracle):
    """Toy property: the number of atoms in the cell."""

    name, unit = "natoms", ""

    def evaluate(self, structures):
        return [float(len(s)) for s in structures]


BIG = task_from_dict({"name": "big", "properties": {"natoms": {"target": "above", "threshold": 5.0, "ramp": 4.0}}})


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny")  # N uniform over 2..5: mean 3.5


def test_a_reward_for_large_cells_moves_the_atom_count_policy_toward_large_n(tiny_prior, tmp_path):
    cfg = RLConfig(
        prior=str(tiny_prior), batch_size=16, validity="none", lr=1e-3, kl_steps=2, threads=1, replay_per_iter=2,
        natoms_action=True, natoms_lr=0.3, epochs=1,
    )  # fmt: skip
    scorer = Scorer(BIG, oracles={"natoms": AtomCount()})
    optimize(BIG, "matinvent", 10_000, 0, tmp_path, cfg, scorer=scorer, progress=False, max_iterations=8)
    n = torch.arange(6, dtype=torch.float64)
    q = load_prior(tiny_prior).natoms_prob
    p = load_prior(tmp_path / "agent").natoms_prob  # the learnt histogram is saved with the agent
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64))
    assert bool((p[:2] == 0).all())  # still never fewer than 2 atoms
    # mass moved toward large N (seeds 0-2 give E[N] 4.5/4.0/4.7 and P(N >= 4) 0.93/0.81/0.96 here)
    assert float((p * n).sum()) > 3.8, p
    assert float(p[4:].sum()) > 0.7 and float(p[2]) < 0.2, p
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["natoms"]
    torch.testing.assert_close(torch.softmax(ck["logits"].double().masked_fill(~ck["support"], -torch.inf), 0), p)
    m = pd.read_csv(tmp_path / "metrics.csv")["natoms_mean"].to_numpy()
    assert len(m) == 8 and np.mean(m[-4:]) > max(np.mean(m[:2]), 3.7), m  # the sampled cells grow
