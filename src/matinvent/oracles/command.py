"""A user's own program as an oracle: write each structure to a file, run the command, read one number.

The command is a list of arguments (or a string split with ``shlex``) in which ``{input}`` is
replaced by the path of the structure file (CIF or extxyz). The program prints the property as
the last number of its standard output (:func:`last_number`: ``band gap = 1.23 eV`` → 1.23; log
lines before it are fine), an ASCII decimal or scientific number (``12``, ``-1.5e3``, ``3.``,
``.5``). When the last number-like token is anything else (``1_000``, ``1,5``, ``0x10``, ``1.2eV``,
non-ASCII digits, ``nan``, ``inf``) the value is NaN, not an earlier number. A non-zero exit, a
timeout or output without a number gives NaN for that structure; the batch goes on.
The command runs in its own session: on timeout its whole process group is killed, grandchildren
included.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from matinvent.config_io import ConfigError, finite_number
from matinvent.oracles.base import Oracle, log

FORMATS = ("cif", "extxyz")
MAX_TIMEOUT = 7 * 24 * 3600.0  # seconds: a command oracle's limit per structure
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII only, by construction
# tokens: split at whitespace, = : ; ! ? | brackets, quotes, and at commas not followed by a digit ("1,5" stays one)
_TOKEN_SEP = re.compile(r"[\s=:;!?|()\[\]{}<>\"'`]+|,(?!\d)")
_STARTS_LIKE_NUMBER = re.compile(r"[+-]?\.?\d")  # a digit of any script, after an optional sign and/or point
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def parse_number(text: str) -> float | None:
    """The finite float that ``text`` spells as an ASCII decimal/scientific number, else ``None``.

    ``float()`` alone would also take ``1_000``, ``١٢٣``, ``１２``, ``nan`` and ``inf``; those are refused.
    """
    text = text.strip()
    if not NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None  # 1e999 overflows to inf


def last_number(text: str) -> float | None:
    """The last number printed in ``text`` (a program's stdout), or ``None``.

    ``text`` is split into tokens at whitespace, ``= : ; ! ? |``, brackets, quotes and commas not
    followed by a digit; one trailing ``.`` of a token (end of a sentence) is dropped. The last token
    that starts like a number (a digit of any script, after an optional sign or point, or
    ``nan``/``inf``) must be an ASCII decimal or scientific number (:func:`parse_number`), else the
    answer is ``None``: a malformed final value never falls back to an earlier number.
    """
    for token in reversed(_TOKEN_SEP.split(text)):
        if token.endswith(".") and not NUMBER.fullmatch(token):
            token = token[:-1]
        if _STARTS_LIKE_NUMBER.match(token) or _NON_FINITE.fullmatch(token):
            return parse_number(token)
    return None


def command_argv(command: Any) -> list[str]:
    """The argument list of ``command``: a string split with ``shlex`` or a list whose numbers become their
    decimal text; raises ``ValueError`` naming the offending argument."""
    if isinstance(command, str):
        try:
            return shlex.split(command)
        except ValueError as exc:  # "No closing quotation"
            raise ValueError(f"the command cannot be split into arguments: {exc}") from exc
    if not isinstance(command, list | tuple):
        raise ValueError(f"the command must be a string or a list of arguments, got {type(command).__name__}")
    argv = []
    for i, a in enumerate(command):
        if isinstance(a, bool) or not isinstance(a, str | int | float):
            raise ValueError(f"command argument {i} must be a string or a number, got {a!r}")
        argv.append(str(a))
    return argv


class CommandOracle(Oracle):
    """Runs ``command`` once per structure (``{input}`` = the structure file) with a timeout in seconds."""

    batch_size = 1

    def __init__(
        self,
        name: str,
        command: str | list[str],
        unit: str = "",
        timeout: float = 600.0,
        file_format: str = "cif",
        description: str = "",
    ) -> None:
        try:
            argv = command_argv(command)
        except ValueError as exc:
            raise ValueError(f"oracle '{name}': {exc}") from exc
        if not argv:
            raise ValueError(f"oracle '{name}': empty command")
        if not any("{input}" in a for a in argv):
            raise ValueError(f"oracle '{name}': the command must contain '{{input}}' (the structure file)")
        if file_format not in FORMATS:
            raise ValueError(f"oracle '{name}': file_format must be one of {FORMATS}, got {file_format!r}")
        if not timeout > 0:
            raise ValueError(f"oracle '{name}': timeout must be > 0 seconds, got {timeout}")
        self.name, self.unit, self.argv = name, unit, argv
        self.timeout, self.file_format = float(timeout), file_format
        self.description = description or f"user command: {' '.join(argv)}"

    def evaluate(self, structures: list[Any]) -> np.ndarray:
        return np.array([self._run_one(s) for s in structures])

    def _run_one(self, structure: Any) -> float:
        with tempfile.TemporaryDirectory(prefix="matinvent-oracle-") as tmp:
            path = Path(tmp) / f"structure.{self.file_format}"
            if self.file_format == "cif":
                structure.to(filename=str(path))
            else:
                from pymatgen.io.ase import AseAtomsAdaptor

                AseAtomsAdaptor.get_atoms(structure).write(str(path), format="extxyz")
            argv = [a.replace("{input}", str(path)) for a in self.argv]
            try:
                code, stdout, stderr = _run_bounded(argv, self.timeout, tmp)
            except subprocess.TimeoutExpired:
                log.warning("oracle '%s': timed out after %g s (process group killed)", self.name, self.timeout)
                return math.nan
            except OSError as exc:
                log.warning("oracle '%s': could not run %s: %s", self.name, argv[0], exc)
                return math.nan
        if code != 0:
            log.warning("oracle '%s': exit code %d: %s", self.name, code, stderr.strip()[-300:])
            return math.nan
        value = last_number(stdout)
        if value is None:
            log.warning("oracle '%s': output ends in no finite ASCII number: %r", self.name, stdout[-200:])
            return math.nan
        return value


def _run_bounded(argv: list[str], timeout: float, cwd: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``argv`` run in a new session; past ``timeout`` its process group is
    killed (``SIGKILL``) and ``subprocess.TimeoutExpired`` raised."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, errors="replace", cwd=cwd, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # the leader is not reaped yet (communicate only waits after EOF), so its pid still names the group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipes
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            proc.wait()
        raise
    return proc.returncode, stdout, stderr


def command_oracle_spec(spec: Any, key: str) -> dict[str, Any]:
    """A task file's settings of one command oracle, validated (``key``: where they are, for the errors)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{key}' must be a mapping with at least 'command'")
    allowed = {"command", "unit", "timeout", "file_format", "description"}
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}' is not a known key (known: {', '.join(sorted(allowed))})")
    if not isinstance(spec.get("command"), str | list) or not spec.get("command"):
        raise ConfigError(f"{key}.command' must be a command line containing {{input}}")
    try:
        argv = command_argv(spec["command"])
    except ValueError as exc:
        raise ConfigError(f"{key}.command': {exc}") from exc
    if not any("{input}" in a for a in argv):
        raise ConfigError(f"{key}.command' must contain {{input}} (the structure file)")
    out = {**spec, "command": argv if isinstance(spec["command"], list) else spec["command"]}
    for k in ("unit", "description"):
        if k in out and not isinstance(out[k], str):
            raise ConfigError(f"{key}.{k}' must be a string, got {out[k]!r}")
    if "timeout" in out:
        out["timeout"] = finite_number(f"{key}.timeout'", out["timeout"], positive=True)
        if out["timeout"] > MAX_TIMEOUT:
            raise ConfigError(f"{key}.timeout' must be <= {MAX_TIMEOUT:g} s, got {out['timeout']:g}")
    if out.get("file_format", "cif") not in ("cif", "extxyz"):
        raise ConfigError(f"{key}.file_format' must be 'cif' or 'extxyz', got {out['file_format']!r}")
    return out
