"""The hostile inputs of ``benchmarks/fuzz_inputs.py`` (issue #12) and how each one is exercised and judged.

- ``cif``, ``tables``, ``settings``, ``folders``: generators of mutated CIFs, extxyz/CSV files, configs and
  task files, and corrupt run/prior folders, each with the outcome a correct matinvent must give;
- ``generate``: writes a seeded, deterministic set of cases; ``exercise``: runs one case in-process and
  lists its problems; ``checks``: physical checks written independently of matinvent's own.
"""
