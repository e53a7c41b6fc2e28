"""Names of the stochastic parts of one reverse transition (torch-free, for configs and the model).

``F_corr``: the fractional-coordinate corrector (Langevin) step; ``F``: the coordinate predictor
step; ``L``: the lattice DDPM step; ``A``: the atom-type step.
"""

COMPONENTS = ("F_corr", "F", "L", "A")
