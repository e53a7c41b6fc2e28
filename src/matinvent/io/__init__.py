"""Files in and out: CDVAE CSVs, packed data sets, structure readers, sample folders, the run memory, export.

Above :mod:`matinvent.crystal`, below the prior. Prior checkpoints live with the prior
(:mod:`matinvent.prior.checkpoint`), because reading one rebuilds the model.
"""
