"""Convex hull of formation energies, and the energy above it (eV/atom).

The hull shipped with the package (``matinvent/data/mp20_hull_entries.csv.gz``, written by
``scripts/build_hull.py``) holds one entry per reduced formula of the MP-20 structures we have
(val split + ``train_partial``: 21,649 formulas). Energies are formation energies per atom on the
Materials Project scale (GGA/GGA+U with the MP2020 corrections), so a generated crystal must be put
on the same scale: :meth:`matinvent.oracles.mlip.MLIPRelaxer.formation_energy` does that for
SevenNet-0 (MP2020-corrected energy vs MP elemental references), and the ``e_above_hull`` oracle
(:class:`matinvent.oracles.mlip.MLIPEnergyAboveHull`) compares it with this hull.

Hull file format (CSV, optionally gzipped; one header line):

- ``formula`` (required): composition, e.g. ``NaCl`` or ``Fe2O3`` (read by pymatgen ``Composition``);
- ``e_form_per_atom`` (required): formation energy per atom, eV/atom, elements at 0;
- ``material_id``, ``energy_kind`` (optional): provenance. In the shipped file ``energy_kind`` is
  ``computed`` (MP's formation energy of a material MP puts on its hull; 4,588 entries), ``hull``
  (MP's hull energy at that composition, ``e_form − e_above_hull`` of ``material_id``: a point on
  MP's hull whose stable phases are not all in MP-20; 4,777) or ``sevennet`` (12,284 MP-20 train
  structures whose energies our copy of MP-20 lacks: SevenNet-0's MP2020-scale formation energy of
  MP's relaxed cell, one energy, no relaxation; 0.009 eV/atom MAE against MP on 50 val rows, and
  at most MP-20's 0.08 eV/atom above MP's hull). The DFT entries alone give each of their 10,047
  source rows MP's own ``e_above_hull`` (largest difference 5e-5 eV/atom); with the SevenNet-0
  points the largest difference is 0.041 eV/atom. Away from these compositions it is still MP's
  hull thinned out (MP-20 keeps ≤ 20-atom cells with E_hull < 0.08 eV/atom, and ~42 % of MP-20's
  train split is missing here), so E_hull of new compositions can still come out too low.

Every element that occurs in an entry gets a 0 eV/atom reference entry. A single pymatgen
``PhaseDiagram`` over ~90 elements cannot be built (qhull in ~90 dimensions), and
``PatchedPhaseDiagram`` takes tens of seconds to build and falls back to an approximate (SLSQP)
decomposition for a chemical system that no single entry spans, which generated crystals often
have. So, as in MatterGen's evaluation,
:class:`ReferenceHull` builds a ``PhaseDiagram`` per chemical system on demand (all entries whose
elements are a subset of it) and caches it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element

REQUIRED_COLUMNS = ("formula", "e_form_per_atom")


class HullFileError(ValueError):
    """A hull file that cannot be read; the message names the file and the bad line."""


def default_hull_path() -> Path:
    """The shipped MP-20 hull file."""
    return Path(str(resources.files("matinvent") / "data" / "mp20_hull_entries.csv.gz"))


def read_hull_entries(path: str | Path) -> list[PDEntry]:
    """Entries of a hull CSV: ``PDEntry(composition, e_form_per_atom × n_atoms)``, ``name`` = formula.

    Raises:
        FileNotFoundError: no such file.
        HullFileError: unreadable CSV, a missing column, or a row with a bad formula / energy
            (the message gives the file and the 1-based line number).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hull file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
        raise HullFileError(f"{path}: not a readable CSV hull file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise HullFileError(
            f"{path}: missing column(s) {missing}; a hull file needs {list(REQUIRED_COLUMNS)} "
            f"(found {list(df.columns)})"
        )
    if df.empty:
        raise HullFileError(f"{path}: no entries")
    ids = df["material_id"] if "material_id" in df.columns else [""] * len(df)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")  # noble-gas compounds
        rows = zip(df["formula"], df["e_form_per_atom"], ids, strict=True)
        return [_entry(path, i, formula, value, material_id) for i, (formula, value, material_id) in enumerate(rows)]


def _entry(path: Path, i: int, formula: str, value: str, material_id: str) -> PDEntry:
    """The entry of data row ``i`` (line ``i + 2``) of a hull file."""
    where = f"{path}: line {i + 2} (formula={formula!r}, e_form_per_atom={value!r})"
    try:
        comp = Composition(formula)
        if comp.num_atoms <= 0 or any(not isinstance(el, Element) for el in comp.elements):
            raise ValueError("not a composition of elements")
    except Exception as exc:  # noqa: BLE001
        raise HullFileError(f"{where}: bad formula ({exc})") from exc
    try:
        e_form = float(value)
    except ValueError:
        e_form = math.nan
    if not math.isfinite(e_form):
        raise HullFileError(f"{where}: e_form_per_atom must be a finite number (eV/atom)")
    return PDEntry(comp, e_form * comp.num_atoms, name=comp.reduced_formula, attribute=material_id or None)


class ReferenceHull:
    """Formation-energy entries (eV/atom scale, elements at 0) and per-chemical-system phase diagrams.

    Args:
        entries: ``PDEntry`` objects whose energies are formation energies (eV, total for the
            entry's composition). A 0 eV reference entry is added for every element they contain.
        source: where the entries came from (shown in reports).
    """

    def __init__(self, entries: Iterable[PDEntry], source: str = "") -> None:
        self.source = source
        self.entries: list[PDEntry] = list(entries)
        self.elements: frozenset[str] = frozenset(el.symbol for e in self.entries for el in e.composition.elements)
        self.entries += [PDEntry(Composition(el), 0.0, name=f"{el} (reference)") for el in sorted(self.elements)]
        self._by_system: dict[frozenset[str], list[PDEntry]] = {}
        for e in self.entries:
            self._by_system.setdefault(frozenset(el.symbol for el in e.composition.elements), []).append(e)
        self._diagrams: dict[frozenset[str], PhaseDiagram] = {}

    def __len__(self) -> int:
        """Number of entries, element references included."""
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ReferenceHull({len(self)} entries, {len(self.elements)} elements, source={self.source!r})"

    def missing_elements(self, elements: Iterable[Any]) -> list[str]:
        """The given elements (symbols or pymatgen Elements) that no hull entry contains."""
        return sorted({str(el) for el in elements} - self.elements)

    def n_compounds(self, elements: Iterable[Any]) -> int:
        """How many compound (≥ 2-element) entries lie in the chemical system of ``elements``.

        0 means the hull there is only the elemental references, so E_hull = E_form: a crystal of
        a system the data never sampled looks "stable" merely for being below its elements.
        """
        system = frozenset(str(el) for el in elements)
        return sum(len(group) for key, group in self._by_system.items() if len(key) > 1 and key <= system)

    def phase_diagram(self, elements: Iterable[Any]) -> PhaseDiagram:
        """The pymatgen ``PhaseDiagram`` of the chemical system spanned by ``elements`` (cached).

        Raises:
            ValueError: an element has no hull entry.
        """
        system = frozenset(str(el) for el in elements)
        missing = self.missing_elements(system)
        if missing:
            raise ValueError(f"the hull ({self.source or 'user entries'}) has no entries with {missing}")
        if system not in self._diagrams:
            entries = [e for key, group in self._by_system.items() if key <= system for e in group]
            self._diagrams[system] = PhaseDiagram(entries)
        return self._diagrams[system]


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> ReferenceHull:
    return ReferenceHull(read_hull_entries(path), source=path)


def load_hull(path: str | Path | None = None) -> ReferenceHull:
    """The hull of a CSV hull file (module docstring), or of the shipped MP-20 file; cached per file.

    Raises:
        FileNotFoundError, HullFileError: as :func:`read_hull_entries`.
    """
    p = Path(path) if path is not None else default_hull_path()
    if not p.is_file():
        raise FileNotFoundError(f"hull file not found: {p}")
    stat = p.stat()
    return _load(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


def e_above_hull_with_reason(
    composition: Any, e_form_per_atom: float, hull: ReferenceHull | PhaseDiagram | str | Path | None = None
) -> tuple[float, str | None]:
    """Energy above the hull (eV/atom, negative = below it) and why it is NaN (None when it is not).

    Args:
        composition: a pymatgen ``Composition`` or formula string.
        e_form_per_atom: formation energy per atom, eV/atom, on the hull's scale.
        hull: a :class:`ReferenceHull`, a pymatgen ``PhaseDiagram`` of formation energies, a hull
            file path, or None for the shipped MP-20 hull.
    """
    comp = composition if isinstance(composition, Composition) else Composition(composition)
    if not math.isfinite(e_form_per_atom):
        return math.nan, "formation energy is not finite"
    if isinstance(hull, PhaseDiagram):
        missing = sorted({el.symbol for el in comp.elements} - {el.symbol for el in hull.elements})
        diagram = hull
    else:
        ref = hull if isinstance(hull, ReferenceHull) else load_hull(hull)
        missing = ref.missing_elements(el.symbol for el in comp.elements)
        diagram = None if missing else ref.phase_diagram(el.symbol for el in comp.elements)
    if missing:
        return math.nan, f"no hull entries contain {', '.join(missing)}"
    entry = PDEntry(comp, e_form_per_atom * comp.num_atoms)
    try:
        _, e_hull = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True)
    except ValueError as exc:
        return math.nan, f"no decomposition on the hull: {exc}"
    return float(e_hull), None


def e_above_hull(
    composition: Any, e_form_per_atom: float, hull: ReferenceHull | PhaseDiagram | str | Path | None = None
) -> float:
    """Energy above the hull, eV/atom (≤ 0: on or below it); NaN when the hull lacks an element.

    See :func:`e_above_hull_with_reason` for the arguments and the reason of a NaN.
    """
    return e_above_hull_with_reason(composition, e_form_per_atom, hull)[0]
