"""Build the convex-hull file shipped with matinvent from MP-20 CSVs (CDVAE layout).

    python scripts/build_hull.py /work/shared/data/mp_20/val.csv.gz /work/shared/data/mp_20/train_partial.csv.gz

Rows without ``formation_energy_per_atom`` or ``e_above_hull`` are skipped. For each reduced
formula one entry is written (``matinvent.oracles.hull`` documents the format): the lowest of MP's hull
energies at that composition, ``e_form − e_above_hull`` (eV/atom), taken from the row with the
smallest ``e_above_hull``; ``energy_kind`` is ``computed`` when that row is itself on MP's hull
and ``hull`` otherwise. The file is gzipped with a fixed timestamp, so a rebuild is byte-identical.
Afterwards every input row's energy above the new hull is compared with its ``e_above_hull``.

``--fill-mlip CSV``: structures whose compositions the energy rows lack (MP-20 rows without
properties, e.g. ``train_partial.csv.gz``) get a SevenNet-0 formation energy of the structure as
given (one energy, no relaxation: they are MP's relaxed cells; MP2020 scale), the lowest per
formula, ``energy_kind`` ``sevennet``. Every MP-20 material is within 0.08 eV/atom of MP's hull,
so these points fill the hull's gaps at most that much too high. Computed energies are appended
to ``--fill-cache`` one per line as they come, so an interrupted build resumes where it stopped.

    python scripts/build_hull.py /work/shared/data/mp_20/val.csv.gz /work/shared/data/mp_20/train_partial.csv.gz \
        --fill-mlip /work/shared/data/mp_20/train_partial.csv.gz --fill-cache runs/hull_fill.csv
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

from matinvent.oracles.hull import default_hull_path, e_above_hull, load_hull

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


def fill_candidates(paths: list[Path], known: set[str]) -> pd.DataFrame:
    """Rows of ``paths`` (material_id, formula, cif) whose reduced formula is not in ``known``."""
    df = pd.concat([pd.read_csv(p, usecols=["material_id", "pretty_formula", "cif"]) for p in paths], ignore_index=True)
    df["formula"] = [Composition(f).reduced_formula for f in df["pretty_formula"]]
    df = df[~df["formula"].isin(known)].drop_duplicates("material_id")
    return df.sort_values("material_id", kind="stable").reset_index(drop=True)


def mlip_energies(rows: pd.DataFrame, cache: Path) -> pd.DataFrame:
    """SevenNet-0 formation energy of each row's structure (cached per material_id in ``cache``)."""
    from pymatgen.core import Structure
    from tqdm import tqdm

    from matinvent.oracles.mlip.energies import static_formation_energy
    from matinvent.oracles.mlip.relax import MLIPRelaxer

    columns = ["material_id", "formula", "e_form_per_atom", "error"]
    done = pd.read_csv(cache) if cache.exists() else pd.DataFrame(columns=columns)
    todo = rows[~rows["material_id"].isin(set(done["material_id"]))]
    if len(todo):
        relaxer = MLIPRelaxer("sevennet-0")
        cache.parent.mkdir(parents=True, exist_ok=True)
        new = not cache.exists()
        with open(cache, "a") as fh:
            if new:
                fh.write(",".join(columns) + "\n")
            for row in tqdm(todo.itertuples(), total=len(todo), desc="SevenNet-0 hull points", unit="structure"):
                try:
                    e, error = static_formation_energy(Structure.from_str(row.cif, fmt="cif"), relaxer), ""
                except Exception as exc:  # noqa: BLE001 - one bad structure never stops the build
                    e, error = float("nan"), f"{type(exc).__name__}: {exc}".replace(",", ";").replace("\n", " ")
                fh.write(f"{row.material_id},{row.formula},{e:.6f},{error}\n")
                fh.flush()
        done = pd.read_csv(cache)
    return done[done["material_id"].isin(set(rows["material_id"]))]


def mlip_table(energies: pd.DataFrame) -> pd.DataFrame:
    """One ``sevennet`` entry per formula: its lowest finite formation energy."""
    ok = energies.dropna(subset=["e_form_per_atom"])
    best = ok.sort_values(["formula", "e_form_per_atom", "material_id"]).groupby("formula", sort=True).head(1)
    return pd.DataFrame(
        {
            "formula": best["formula"],
            "e_form_per_atom": best["e_form_per_atom"].round(6),
            "material_id": best["material_id"],
            "energy_kind": "sevennet",
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
    parser.add_argument(
        "--fill-mlip", nargs="+", type=Path, default=[], help="structure CSVs: SevenNet-0 points for missing formulas"
    )
    parser.add_argument("--fill-cache", type=Path, default=Path("runs/hull_fill.csv"), help="resumable energy cache")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")  # noble-gas compounds
    rows = read_rows(args.csv)
    table = hull_table(rows)
    if args.fill_mlip:
        energies = mlip_energies(fill_candidates(args.fill_mlip, set(table["formula"])), args.fill_cache)
        failed = int(energies["e_form_per_atom"].isna().sum())
        print(f"SevenNet-0 points: {len(energies)} structures, {failed} failed")
        table = pd.concat([table, mlip_table(energies)]).sort_values("formula", kind="stable").reset_index(drop=True)
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
