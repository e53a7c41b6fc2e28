"""Build the convex-hull file shipped with matinvent from MP-20 CSVs (CDVAE layout).

    python scripts/build_hull.py /work/shared/data/mp_20/val.csv.gz /work/shared/data/mp_20/train_partial.csv.gz

Rows without ``formation_energy_per_atom`` or ``e_above_hull`` are skipped. For each reduced
formula one entry is written (``matinvent.hull`` documents the format): the lowest of MP's hull
energies at that composition, ``e_form − e_above_hull`` (eV/atom), taken from the row with the
smallest ``e_above_hull``; ``energy_kind`` is ``computed`` when that row is itself on MP's hull
and ``hull`` otherwise. The file is gzipped with a fixed timestamp, so a rebuild is byte-identical.
Afterwards every input row's energy above the new hull is compared with its ``e_above_hull``.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition

from matinvent.hull import default_hull_path, e_above_hull, load_hull

COLUMNS = ["material_id", "formation_energy_per_atom", "pretty_formula", "e_above_hull"]
ON_HULL_TOL = 1e-6  # eV/atom


def read_rows(paths: list[Path]) -> pd.DataFrame:
    """The MP-20 rows with both energies, plus ``formula`` (reduced) and ``hull_energy`` (eV/atom)."""
    df = pd.concat([pd.read_csv(p, usecols=COLUMNS) for p in paths], ignore_index=True)
    df = df.dropna(subset=["formation_energy_per_atom", "e_above_hull"]).reset_index(drop=True)
    df["formula"] = [Composition(f).reduced_formula for f in df["pretty_formula"]]
    df["hull_energy"] = df["formation_energy_per_atom"] - df["e_above_hull"]
    return df


def hull_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One entry per reduced formula: its lowest hull energy and where it comes from."""
    best = rows.sort_values(["formula", "e_above_hull", "material_id"]).groupby("formula", sort=True).head(1)
    return pd.DataFrame(
        {
            "formula": best["formula"],
            "e_form_per_atom": rows.groupby("formula")["hull_energy"].min().loc[best["formula"]].to_numpy().round(6),
            "material_id": best["material_id"],
            "energy_kind": ["computed" if e <= ON_HULL_TOL else "hull" for e in best["e_above_hull"]],
        }
    )


def write_gzip_csv(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table.to_csv(index=False, lineterminator="\n")
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        fh.write(text.encode())


def check(rows: pd.DataFrame, out: Path) -> float:
    """Largest |E_hull(new hull) − e_above_hull(MP)| over the input rows, eV/atom."""
    hull = load_hull(out)
    ours = [
        e_above_hull(f, e, hull) for f, e in zip(rows["pretty_formula"], rows["formation_energy_per_atom"], strict=True)
    ]
    return float((pd.Series(ours) - rows["e_above_hull"]).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="+", type=Path, help="MP-20 CSV(.gz) files in the CDVAE layout")
    parser.add_argument("--out", type=Path, default=default_hull_path(), help="hull file to write (.csv.gz)")
    parser.add_argument("--no-check", action="store_true", help="skip re-computing E_hull of every input row")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")  # noble-gas compounds
    rows = read_rows(args.csv)
    table = hull_table(rows)
    write_gzip_csv(table, args.out)
    kinds = table["energy_kind"].value_counts().to_dict()
    print(f"{args.out}: {len(table)} entries ({kinds}) from {len(rows)} rows, {args.out.stat().st_size / 1024:.0f} kB")
    if not args.no_check:
        start = time.perf_counter()
        worst = check(rows, args.out)
        print(
            f"max |E_hull - e_above_hull(MP)| over the {len(rows)} rows: {worst:.2e} eV/atom "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
