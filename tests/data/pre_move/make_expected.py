"""Write ``expected.json``: what the public API and CLI gave on files written before the package move.

Run once with the code of commit 3ce3fb0 (before issue 30's move-and-split), from this folder:
``python make_expected.py``. ``tests/test_pre_move_files.py`` recomputes the same values with the
current code and compares. Only the public surface is used (``import matinvent as mi``, the
``matinvent`` command, sqlite3 and ASE), so the script itself runs unchanged on both sides.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRIORS = ("mp20_masked", "mp20_small", "mp20_base")


def sampled(name: str) -> list[dict]:
    """Three crystals of a bundled prior (seed 0, 4 sampler steps): formula, lattice and fractional coordinates."""
    import matinvent as mi

    out = []
    for s in mi.load_prior(name).sample(3, seed=0, steps=4):
        out.append(
            {
                "formula": s.composition.formula,
                "matrix": s.lattice.matrix.round(8).tolist(),
                "frac": s.frac_coords.round(8).tolist(),
            }
        )
    return out


def memory_rows(run: Path) -> list[list]:
    with sqlite3.connect(run / "memory.sqlite") as db:
        cur = db.execute("SELECT iteration, formula, valid, reward, hit FROM crystals ORDER BY id")
        return [list(r) for r in cur.fetchall()]


def matinvent(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "matinvent.cli", *args], cwd=cwd, check=True, capture_output=True)


def resumed(work: Path) -> dict:
    """Resume the committed run folder from budget 8 to 12 (same prior, task, config, seed)."""
    for name in ("prior", "run", "task.yaml", "config.yaml"):
        src = HERE / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    before = memory_rows(work / "run")
    args = ["optimize", "--task", "task.yaml", "--budget", "12", "--seed", "0", "--out", "run"]
    matinvent(*args, "--config", "config.yaml", "--prior", "prior", "--threads", "1", "--resume", cwd=work)
    summary = json.loads((work / "run" / "summary.json").read_text())
    summary.pop("wall_s", None)
    return {"before": before, "after": memory_rows(work / "run"), "summary": summary}


def exported(work: Path) -> list[dict]:
    from ase.io import read

    matinvent("export", str(HERE / "run"), "--hits", "--out", str(work / "hits.extxyz"), cwd=work)
    frames = read(work / "hits.extxyz", index=":")
    return [{"formula": a.get_chemical_formula(), "info": {k: a.info[k] for k in sorted(a.info)}} for a in frames]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "export").mkdir()
        expected = {
            "samples": {name: sampled(name) for name in PRIORS},
            "resume": resumed(work),
            "export": exported(work / "export"),
        }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
