"""A screenshot of ``report.html`` as headless Chromium (Debian's ``chromium``) draws it, offline.

Copies the report's inputs of the given run folders (memory, metrics, summary, run.json, recheck.csv)
into a temporary folder and writes the web report there (the run folders stay untouched),
opens it with ``chromium --headless --screenshot`` with every host name unresolvable (the page must
need no network) and software WebGL for the 3-D views, and saves the PNG.

    python benchmarks/report_html_screenshot.py runs/rl_bench/band_gap_matinvent_s7 runs/rl_bench/band_gap_prior_s7

Writes ``benchmarks/results/report_html.png`` (``--png`` to change). Prints the time taken.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from matinvent.report.html import write_html_report

RESULTS = Path(__file__).parent / "results"
INPUTS = ("memory.sqlite", "metrics.csv", "summary.json", "run.json", "recheck.csv")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--host-resolver-rules=MAP * ~NOTFOUND",
)  # fmt: skip


def screenshot(page: Path, png: Path, width: int, height: int, wait_ms: int) -> None:
    """Draw ``page`` in a ``width`` × ``height`` px headless Chromium for ``wait_ms`` virtual ms; save ``png``."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        window, budget, shot = (
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={png}",
        )
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", window, budget, shot, page.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    if not png.exists() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"chromium wrote no PNG to {png}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of matinvent optimize")
    ap.add_argument("--png", type=Path, default=RESULTS / "report_html.png", help="screenshot to write")
    ap.add_argument("--top", type=int, default=8, help="top candidates per run")
    ap.add_argument("--width", type=int, default=1280, help="window width (px)")
    ap.add_argument("--height", type=int, default=2600, help="window height (px)")
    ap.add_argument("--wait-ms", type=int, default=20000, help="virtual time the page gets to draw (ms)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for run in args.runs:
            copies.append(Path(tmp) / run.resolve().name)
            copies[-1].mkdir()
            for name in INPUTS:
                if (run / name).exists():
                    shutil.copy2(run / name, copies[-1] / name)
        page = write_html_report(copies, Path(tmp) / "report", top=args.top)
        args.png = args.png.resolve()
        t1 = time.perf_counter()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page, args.png, args.width, args.height, args.wait_ms)
        size = page.stat().st_size
    t2 = time.perf_counter()
    print(f"report.html ({size / 1e6:.1f} MB) written in {t1 - t0:.1f} s; screenshot {args.png} in {t2 - t1:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
