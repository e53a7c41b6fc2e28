"""A folder of sampled crystals: one CIF per crystal and the manifest that says which run wrote them.

``matinvent sample`` writes ``DIR/samples.json``: ``{"kind": "matinvent-samples", "run_id", "seed",
"checkpoint", "steps", "n", "n_written", "failed": [sample indices without a CIF], "files":
{name: sha256}}``. It refuses a folder that already holds CIFs or a manifest (``overwrite``
clears them first). ``matinvent evaluate DIR`` refuses a folder whose CIFs are not exactly the
manifest's files (names and contents), or that holds several manifests, so two runs can never be
evaluated as one. A folder of CIFs without a manifest (user data) is read as it is.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matinvent.crystal.record import Crystal, CrystalError
from matinvent.io.structure_files import write_extxyz

MANIFEST = "samples.json"
KIND = "matinvent-samples"
LEGACY_INFO = "sample_info.json"  # written by earlier releases: {"failed": [...], ...}, no file list
SAMPLE_OUTPUTS = ("samples.extxyz", "evaluation.json")  # cleared with the CIFs on overwrite


class SampleFolderError(ValueError):
    """A sample folder mixes runs or would be overwritten; the message names the folder and files."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifests(directory: Path) -> list[Path]:
    """Every ``*.json`` of ``directory`` that is a sample manifest (plus a legacy ``sample_info.json``)."""
    found = []
    for f in sorted(directory.glob("*.json")):
        if f.name == LEGACY_INFO:
            found.append(f)
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == KIND:
            found.append(f)
    return found


def _old_samples(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.cif")) + manifests(directory) if directory.is_dir() else []


def refuse_old_samples(directory: str | Path) -> None:
    """``SampleFolderError`` when ``directory`` already holds CIFs or a manifest (checked before sampling)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise SampleFolderError(f"{directory} is a file, not a folder")
    old = _old_samples(directory)
    if old:
        names = ", ".join(f.name for f in old[:5]) + (f" … ({len(old)} files)" if len(old) > 5 else "")
        raise SampleFolderError(
            f"{directory} already holds samples ({names}); choose another --out or pass --overwrite to clear them"
        )


def prepare_folder(directory: str | Path, overwrite: bool = False) -> Path:
    """Create ``directory`` for a new run; refuse (or with ``overwrite`` clear) old CIFs and manifests."""
    directory = Path(directory)
    if not overwrite:
        refuse_old_samples(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for f in _old_samples(directory) + [directory / name for name in SAMPLE_OUTPUTS]:
        f.unlink(missing_ok=True)
    return directory


def write_manifest(directory: str | Path, files: list[str], failed: list[int], meta: dict[str, Any]) -> Path:
    """Write ``DIR/samples.json`` for the CIF ``files`` just written (hashes taken now)."""
    directory = Path(directory)
    manifest = {
        "kind": KIND,
        "run_id": uuid.uuid4().hex[:12],
        **meta,
        "n": len(files) + len(failed),
        "n_written": len(files),
        "failed": failed,
        "files": {name: _sha256(directory / name) for name in files},
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2))
    return path


def check_folder(directory: str | Path) -> dict[str, Any] | None:
    """The folder's manifest (``None`` when it has none); ``SampleFolderError`` when it mixes runs."""
    directory = Path(directory)
    found = manifests(directory)
    if len(found) > 1:
        raise SampleFolderError(
            f"{directory} holds {len(found)} sample manifests ({', '.join(f.name for f in found)}): "
            "files from several runs; evaluate each run's folder on its own"
        )
    if not found:
        return None
    data = json.loads(found[0].read_text())
    if found[0].name == LEGACY_INFO:  # no file list to check against
        return {"failed": data.get("failed", []), "legacy": True}
    listed: dict[str, str] = data.get("files", {})
    present = {f.name: f for f in directory.glob("*.cif")}
    stray = sorted(set(present) - set(listed))
    missing = sorted(set(listed) - set(present))
    changed = sorted(name for name in set(listed) & set(present) if _sha256(present[name]) != listed[name])
    if stray or missing or changed:
        groups = (("not in the manifest", stray), ("missing", missing), ("changed since written", changed))
        parts = [
            f"{label}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''} ({len(names)})"
            for label, names in groups
            if names
        ]
        raise SampleFolderError(
            f"{directory}: its CIFs are not the files of run {data.get('run_id', '?')} in {found[0].name} — "
            + "; ".join(parts)
        )
    return data


@dataclass
class SampleFolder:
    """Crystals of a folder, ``None`` where a CIF did not parse or a sample failed to build."""

    ids: list[str]
    crystals: list[Crystal | None]
    manifest: dict[str, Any] | None = None
    errors: dict[int, str] = field(default_factory=dict)  # index → why the crystal is None


def read_sample_folder(directory: str | Path) -> SampleFolder:
    """Check the folder (see ``check_folder``), then read every ``*.cif`` (sorted) and its failed samples.

    Samples the manifest lists as failed are appended as ``None`` (ids = their sample index), so
    that validity is a fraction of all requested samples.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a folder: {directory}")
    manifest = check_folder(directory)
    ids: list[str] = []
    crystals: list[Crystal | None] = []
    errors: dict[int, str] = {}
    for f in sorted(directory.glob("*.cif")):
        ids.append(f.stem)
        try:
            crystals.append(Crystal.read_cif(f))
        except CrystalError as exc:
            warnings.warn(str(exc), stacklevel=2)
            errors[len(crystals)] = "unreadable CIF"
            crystals.append(None)
    for i in (manifest or {}).get("failed", []):
        ids.append(f"{i:06d}" if isinstance(i, int) else str(i))
        errors[len(crystals)] = "degenerate sample (no CIF written)"
        crystals.append(None)
    if not crystals:
        raise FileNotFoundError(f"no CIF files in {directory}")
    return SampleFolder(ids=ids, crystals=crystals, manifest=manifest, errors=errors)


def write_samples(
    crystals: list[Crystal | None], directory: str | Path, meta: dict | None = None, overwrite: bool = False
) -> Path:
    """``DIR/000000.cif`` … for each buildable crystal, ``DIR/samples.extxyz`` and the manifest ``DIR/samples.json``.

    Refuses a folder that already holds CIFs or a manifest unless ``overwrite`` (which clears them).
    """
    directory = prepare_folder(directory, overwrite=overwrite)
    ok, files, failed = [], [], []
    for i, c in enumerate(crystals):
        if c is None:
            failed.append(i)
            continue
        c.write_cif(directory / f"{i:06d}.cif")
        files.append(f"{i:06d}.cif")
        ok.append(c)
    if ok:
        write_extxyz(ok, directory / "samples.extxyz")
    write_manifest(directory, files, failed, meta or {})
    return directory
