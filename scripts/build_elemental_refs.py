"""Build the table of MP elemental reference energies shipped with matinvent (run once, offline).

    python scripts/build_elemental_refs.py            # writes src/matinvent/data/mp_elemental_refs.json
    python scripts/build_elemental_refs.py --check    # compares the shipped table with a rebuild

Provenance. The energies are the raw (uncorrected) GGA/GGA+U total energies per atom of the
Materials Project elemental ground states, as pymatgen ships them with the data MP2020 was fitted
on: ``calc_compounds.json.gz`` (a list of MP ``ComputedEntry`` objects, 423 compounds and
elements; inside ``pymatgen/analysis/compatibility/`` in pymatgen 2026.10, ``pymatgen/entries/``
in older releases). For every element the single-element entry with the lowest energy per atom is
kept, with its MP id and run type. MP2020 applies no correction to pure elements, so the numbers
are the elemental chemical potentials of both the raw (SevenNet) and the MP2020-corrected
(CHGNet) energy scales, and formation energies computed against them reproduce MP's (MgO: −3.05
eV/atom). The file is a private data file of pymatgen's, read only here; matinvent reads the
table this script writes (:func:`matinvent.oracles.mlip.mp_elemental_references`).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import math
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "matinvent" / "data" / "mp_elemental_refs.json"
SOURCE_FILE = "calc_compounds.json.gz"


def source_path() -> Path:
    """pymatgen's MP2020 fitting data, wherever this pymatgen release keeps it."""
    for module in ("pymatgen.analysis.compatibility", "pymatgen.entries"):
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if spec is not None and spec.origin is not None:
            path = Path(spec.origin).parent / SOURCE_FILE
            if path.is_file():
                return path
    raise FileNotFoundError(f"this pymatgen has no {SOURCE_FILE} (MP2020 fitting data)")


def elemental_references(entries: list[dict] | dict) -> dict[str, dict]:
    """Element -> {energy_per_atom (eV/atom), material_id, run_type} of its lowest single-element entry."""
    refs: dict[str, dict] = {}
    for entry in entries.values() if isinstance(entries, dict) else entries:
        comp = {el: n for el, n in entry["composition"].items() if n > 0}
        if len(comp) != 1:
            continue
        ((el, n),) = comp.items()
        e = entry["energy"] / n
        if e < refs.get(el, {}).get("energy_per_atom", math.inf):
            refs[el] = {
                "energy_per_atom": round(e, 9),
                "material_id": entry.get("entry_id"),
                "run_type": entry.get("parameters", {}).get("run_type"),
            }
    return dict(sorted(refs.items()))


def build() -> dict:
    path = source_path()
    with gzip.open(path, "rt") as fh:
        refs = elemental_references(json.load(fh))
    return {
        "description": "raw GGA/GGA+U energy per atom (eV/atom) of each element's Materials Project ground state",
        "unit": "eV/atom",
        "source": f"pymatgen {importlib.metadata.version('pymatgen')}, {path.parent.name}/{SOURCE_FILE}",
        "script": "scripts/build_elemental_refs.py",
        "references": refs,
    }


def to_json(table: dict) -> str:
    """The table as JSON with one line per element (readable diffs)."""
    head = {k: v for k, v in table.items() if k != "references"}
    lines = [f"  {json.dumps(el)}: {json.dumps(ref)}" for el, ref in table["references"].items()]
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in head.items())
    return "{" + body + ',\n"references": {\n' + ",\n".join(lines) + "\n}}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--check", action="store_true", help="compare --out with a rebuild instead of writing it")
    args = p.parse_args(argv)
    table = build()
    if args.check:
        old = json.loads(args.out.read_text())["references"]
        new = table["references"]
        diff = {el for el in old.keys() | new.keys() if old.get(el) != new.get(el)}
        print(f"{len(new)} elements; {len(diff)} differ from {args.out}: {sorted(diff)}")
        return 1 if diff else 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(table))
    print(f"wrote {len(table['references'])} elemental references to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
