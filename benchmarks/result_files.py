"""What every benchmark script writes: ``benchmarks/results/<name>.json`` and ``.md`` (and prints the table)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def stamp() -> dict[str, str]:
    """Date, machine and the command line that ran the script (``result`` keys every table cites)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {platform.processor() or 'CPU'}",
        "command": "python " + " ".join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write(name: str, result: dict, text: str) -> None:
    """``result`` as JSON and ``text`` as markdown under ``benchmarks/results/``; the table is printed too."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
