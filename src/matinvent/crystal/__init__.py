"""Crystals as data: the :class:`~matinvent.crystal.record.Crystal` record, batches, identity, checks, validity.

The lowest layer above the YAML helpers: it knows nothing of models, oracles or runs. Modules load
on import of their own name only (this file imports nothing), so torch-free code stays torch-free.
"""
