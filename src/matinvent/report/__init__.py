"""Reports of optimisation runs: run reading, curves, ``report.md``, ``report.html`` and structure views."""
