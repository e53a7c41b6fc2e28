"""Structure files in and out: folders of CIFs, extended-XYZ files and CDVAE CSVs, every item read on its own.

Input may be a folder of CIF files, a .cif, an extxyz file or a CDVAE/DiffCSP CSV; every file, frame
and row is read on its own (:func:`read_structure_items`), after the cheap checks of
:mod:`matinvent.crystal.checks`, and one that fails becomes an item with a reason naming the file
(and frame or row) and the problem.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from matinvent.crystal.checks import MAX_ATOMS, check_volume_per_atom, decode_text, split_xyz_frames
from matinvent.crystal.record import Crystal, CrystalError


def write_extxyz(crystals: list[Crystal], path: str | Path) -> None:
    """Write all crystals to one extended-XYZ file."""
    from ase.io import write

    write(str(path), [c.to_atoms() for c in crystals], format="extxyz")


def iter_extxyz(path: str | Path, max_atoms: int | None = MAX_ATOMS) -> Iterator[tuple[str, Crystal | None, str]]:
    """(id, crystal, "") or (id, None, reason naming the file and frame) per frame of an extended-XYZ file.

    Frames are cut by their count lines before ASE reads them (``split_xyz_frames``), so a bad frame
    costs only itself and a frame larger than ``max_atoms`` is never parsed. Ids are the frame's
    ``id`` / ``name`` info or ``<stem>_<frame:06d>``.
    """
    from ase.io import read

    path = Path(path)
    try:
        text, replaced = decode_text(path.read_bytes())
    except OSError as exc:
        raise CrystalError(f"{path}: could not read: {exc}") from exc
    note = " (file is not valid UTF-8; invalid bytes were replaced)" if replaced else ""
    for i, (chunk, reason) in enumerate(split_xyz_frames(text, max_atoms)):
        name = f"{path.stem}_{i:06d}"
        if chunk is None:
            yield name, None, f"{path.name} frame {i}: could not read extxyz: {reason}{note}"
            continue
        try:
            atoms = read(io.StringIO(chunk), format="extxyz")
        except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
            yield name, None, f"{path.name} frame {i}: could not read extxyz: {exc}{note}"
            continue
        name = str(atoms.info.get("id", atoms.info.get("name", name)))
        try:
            yield name, Crystal.from_atoms(atoms, max_atoms=max_atoms), ""
        except CrystalError as exc:
            yield name, None, f"{path.name} frame {i}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a hostile frame must cost only itself
            yield name, None, f"{path.name} frame {i}: {type(exc).__name__}: {exc}"


def read_extxyz(path: str | Path, max_atoms: int | None = MAX_ATOMS) -> list[Crystal]:
    """Read every frame of an extended-XYZ file; ``CrystalError`` naming the first bad frame."""
    crystals = []
    for _, crystal, reason in iter_extxyz(path, max_atoms):
        if crystal is None:
            raise CrystalError(reason)
        crystals.append(crystal)
    return crystals


class StructureItems(NamedTuple):
    """Aligned per-item ids, crystals (``None`` where unusable) and reasons (``""`` where read)."""

    ids: list[str]
    crystals: list[Crystal | None]
    reasons: list[str]


def read_structure_items(path: str | Path, max_atoms: int | None = MAX_ATOMS) -> StructureItems:
    """Every item of a folder of CIFs, a .cif, an extxyz file or a CDVAE CSV, each read on its own.

    A file, frame or row that cannot be used (unparsable, more than ``max_atoms`` atoms, non-element
    symbols, partial occupancies, absurd cell or volume per atom, …) gets crystal ``None`` and a
    reason naming it; one warning sums them up. Only a missing path, an empty folder, an extxyz
    without frames or a CSV without a ``cif`` column raise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir() or name.endswith(".cif"):
        items, labels = _read_cif_files(path, max_atoms)
    elif name.endswith((".csv", ".csv.gz")):
        from matinvent.io.cdvae_csv import read_cdvae_csv

        table = read_cdvae_csv(path, max_atoms=max_atoms, keep_failed=True)
        items = StructureItems(list(table.ids), list(table.crystals), list(table.reasons))
        labels = [f"{path.name} row {i} ({row_id})" for i, row_id in enumerate(table.ids)]
    elif name.endswith((".extxyz", ".xyz")):
        frames = list(iter_extxyz(path, max_atoms))
        if not frames:
            raise CrystalError(f"{path}: no frames")
        items = StructureItems(*(list(column) for column in zip(*frames, strict=True)))
        labels = [f"{path.name} frame {i}" for i in range(len(frames))]
    else:
        raise ValueError(f"{path}: expected a folder of CIF files, a .cif, an .extxyz or a CDVAE .csv(.gz)")
    for i, crystal in enumerate(items.crystals):
        if crystal is not None and (why := check_volume_per_atom(crystal.volume, crystal.num_atoms)):
            items.crystals[i], items.reasons[i] = None, f"{labels[i]}: {why}"
    failed = [r for r in items.reasons if r]
    if failed:
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        warnings.warn(
            f"{path}: {len(failed)} of {len(items.ids)} structures unusable: {'; '.join(failed[:3])}{more}",
            stacklevel=2,
        )
    return items


def _read_cif_files(path: Path, max_atoms: int | None) -> tuple[StructureItems, list[str]]:
    """The items of a .cif or a folder's ``*.cif`` (sorted by name), and the file names."""
    files = sorted(path.glob("*.cif")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .cif files in {path}")
    items = StructureItems([f.stem for f in files], [], [])
    for f in files:
        crystal, reason = None, ""
        try:
            crystal = Crystal.read_cif(f, max_atoms=max_atoms)
        except CrystalError as exc:
            reason = str(exc).replace(str(f), f.name, 1)
        except Exception as exc:  # noqa: BLE001 - a hostile file must cost only its own row
            reason = f"{f.name}: {type(exc).__name__}: {exc}"
        items.crystals.append(crystal)
        items.reasons.append(reason)
    return items, [f.name for f in files]


def read_structures(path: str | Path, max_atoms: int | None = MAX_ATOMS) -> tuple[list[str], list[Crystal | None]]:
    """(ids, crystals) of ``read_structure_items``; unusable items → ``None`` (the warning names them)."""
    ids, crystals, _ = read_structure_items(path, max_atoms=max_atoms)
    return ids, crystals
