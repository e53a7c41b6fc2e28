"""Every dotted ``matinvent.…`` name in the README, the docs and the docstrings names something that exists.

After the move into subpackages a stale module path in prose is the likeliest leftover; this test
imports each one (module, then attributes) instead of trusting a list.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w/.])matinvent(?:\.[A-Za-z_]\w*)+")


def _resolves(ref: str) -> bool:
    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:i]))
        except (ModuleNotFoundError, ValueError):
            spec = None
        if spec is not None:
            obj = importlib.import_module(".".join(parts[:i]))
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def _texts() -> list[Path]:
    docs = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    return docs + sorted((ROOT / "src" / "matinvent").rglob("*.py"))


def test_every_dotted_matinvent_name_exists():
    stale = {}
    for path in _texts():
        for ref in set(DOTTED.findall(path.read_text())):
            if not ref.endswith((".py", ".md", ".yaml", ".json")) and not _resolves(ref):
                stale.setdefault(ref, []).append(path.relative_to(ROOT).as_posix())
    assert stale == {}


def test_the_check_catches_a_stale_name():
    assert _resolves("matinvent.prior.sampler.sample") and _resolves("matinvent.io.structure_files")
    assert not _resolves("matinvent.crystal_diffusion") and not _resolves("matinvent.scoring.scorer.read_structures")


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def test_the_readme_is_a_page_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = {(ROOT / target).resolve() for target in LINK.findall(readme)}
    assert {p.resolve() for p in (ROOT / "docs").glob("*.md")} <= linked


def test_every_relative_link_of_the_readme_and_docs_exists():
    missing = []
    for page in [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []
