"""The ``matinvent`` command line: pretrain, sample, evaluate, score, tasks, optimize, save-prior, report, recheck,
export."""

from __future__ import annotations

import argparse
import sys

from matinvent.api import DEFAULT_METHOD
from matinvent.cli import commands
from matinvent.cli.commands import EXPORT_FORMATS


def _shows_default(action: argparse.Action) -> bool:
    """An option with a default worth printing (not unset, ``False`` or suppressed)."""
    default = action.default
    return bool(action.option_strings) and not (default is None or default is False or default is argparse.SUPPRESS)


class _HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to each option's help unless the default is unset/False or the help states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not _shows_default(action) or "(default" in text or "default:" in text:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help shows defaults; its sub-commands' parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.help is None and _shows_default(action):  # argparse prints nothing for an option without help
            action.help = "(default: %(default)s)"
        return action


def add_executor_arguments(q: argparse.ArgumentParser, config: bool = False) -> None:
    """``--executor``, ``--scheduler``, ``--workers``: where the oracle calls run (``executors.make_executor``)."""
    from matinvent.scoring.executor import EXECUTORS

    default = "the config's 'executor', local" if config else "local"
    q.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None if config else "local",
        help="local: in-process (worker processes with --oracle-timeout) | dask: one task per structure on a Dask"
        f" cluster, results stored as they complete (default: {default})",
    )
    q.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="Dask scheduler address, e.g. tcp://node:8786 (--executor dask; default: a LocalCluster here)",
    )
    q.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes: of the LocalCluster (--executor dask, default 2) or local ones running the calls in"
        " parallel (--executor local; default: in-process, or one with --oracle-timeout)",
    )


def build_parser() -> argparse.ArgumentParser:
    from matinvent import __version__
    from matinvent.cli.constraint_args import add_constraint_arguments
    from matinvent.crystal.validity import GATES
    from matinvent.evaluation.sample_metrics import EVALUATION_GATES

    p = _Parser(prog="matinvent", description="Goal-directed crystal design with RL-tuned diffusion.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("pretrain", help="train a crystal diffusion prior on CDVAE-style CSVs")
    q.add_argument("--data", required=True, help="folder with train*.csv[.gz] and val*.csv[.gz]")
    q.add_argument("--config", help="YAML config (defaults when omitted)")
    q.add_argument("--out", required=True, help="run folder (checkpoint/, history.csv, trainer_state.pt)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out")
    q.add_argument("--device", help="cpu or cuda (overrides train.device)")
    q.add_argument("--seed", type=int, help="overrides train.seed")
    q.add_argument("--max-steps", type=int, help="overrides train.max_steps")
    q.set_defaults(func=commands.cmd_pretrain)

    q = sub.add_parser("sample", help="draw crystals from a prior: DIR/000000.cif ... and DIR/samples.extxyz")
    q.add_argument("--n", type=int, required=True, help="number of crystals")
    q.add_argument("--seed", type=int, default=0, help="sampler seed (same seed, steps, batch size: same crystals)")
    q.add_argument("--out", required=True, help="output folder (new or empty, unless --overwrite)")
    q.add_argument("--checkpoint", help="prior checkpoint folder (default: the bundled one)")
    q.add_argument(
        "--steps",
        type=int,
        help="respaced sampler with this many steps (default: the checkpoint's sample_steps, else all T)",
    )
    q.add_argument("--batch-size", type=int, default=256, help="crystals denoised together")
    q.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    q.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out, clearing the CIFs and manifest a previous run left there",
    )
    add_constraint_arguments(q)
    q.set_defaults(func=commands.cmd_sample)

    q = sub.add_parser("evaluate", help="validity, uniqueness, novelty and property distances of a sample folder")
    q.add_argument("dir", help="folder of CIF files written by 'matinvent sample' (or any folder of CIFs)")
    q.add_argument("--reference", help="CDVAE-style CSV for novelty and Wasserstein distances")
    q.add_argument("--reference-limit", type=int, help="use only the first rows of the reference CSV")
    q.add_argument(
        "--validity",
        choices=EVALUATION_GATES,
        default="physical",
        help="geometric check that, with SMACT, defines the valid set: physical (covalent radii + density,"
        " default) | cdvae (distances >= 0.5 A)",
    )
    q.add_argument("--save-detailed", metavar="CSV", help="write one row per crystal: checks, reasons, flags")
    q.add_argument(
        "--stability", action="store_true", help="run matinvent.evaluation.stability on physically valid crystals"
    )
    q.add_argument("--stability-n", type=int, default=200, help="crystals drawn (seeded) for --stability")
    q.add_argument(
        "--stability-engine",
        choices=["auto", "batched", "ase"],
        default="auto",
        help="how --stability relaxes: batched (all at once, torch-sim), ase (one at a time); auto: batched if there",
    )
    q.add_argument("--hull", help="hull CSV for --stability (matinvent.oracles.hull; default: its shipped MP-20 hull)")
    q.add_argument("--training", help="CDVAE-style CSV of training structures for --stability (novelty, SUN)")
    q.add_argument("--seed", type=int, default=0, help="seed of the --stability subset")
    q.set_defaults(func=commands.cmd_evaluate)

    from matinvent.crystal.checks import MAX_ATOMS

    q = sub.add_parser("score", help="properties, reward and hit of each structure for a task -> CSV")
    q.add_argument("path", help="folder of CIF files, an .extxyz file or a CDVAE .csv[.gz]")
    q.add_argument("--task", required=True, help="shipped task name (see 'matinvent tasks') or a task YAML file")
    q.add_argument(
        "--relax",
        choices=["auto", "mlip", "none"],
        default="auto",
        help="relax -> gate -> score: relax each structure with an MLIP first, gate the relaxed one, score it (its "
        "energies/EOS/elastic tensor); none: score the structures as given; auto (default): mlip when the MLIP "
        "extra is installed",
    )
    q.add_argument("--mlip-model", default="sevennet-0", help="MLIP for --relax mlip: sevennet-0 or chgnet")
    q.add_argument(
        "--stability",
        choices=["auto", "hull", "none"],
        default="auto",
        help="hull: a hit also needs E_hull <= 0.1 eV/atom on the relaxation (reward ramps to 0 at 0.3); "
        "auto (default): hull when relaxing",
    )
    q.add_argument("--out", default="scores.csv", help="CSV to write (default scores.csv)")
    q.add_argument("--batch-size", type=int, default=64, help="structures per oracle batch")
    q.add_argument(
        "--max-atoms",
        type=int,
        default=MAX_ATOMS,
        help=f"refuse structures with more atoms, before parsing them (default {MAX_ATOMS}; MP-20 has <= 20)",
    )
    q.add_argument(
        "--validity",
        choices=GATES,
        default="physical",
        help="gate before any oracle; invalid structures get reward 0 and a reason: physical (default) |"
        " physical+composition (and SMACT) | cdvae (distances >= 0.5 A) | cdvae+composition | none",
    )
    q.add_argument(
        "--oracle-timeout",
        type=float,
        metavar="S",
        help="run each structure's oracle call in a worker process, killed after S seconds (NaN and a reason);"
        " default: in-process, unbounded (command oracles always use their own timeout)",
    )
    add_executor_arguments(q)
    q.add_argument(
        "--cache",
        metavar="PATH",
        help="sqlite cache of oracle results: looked up first, each new result stored as it arrives (a rerun"
        " after a kill calls the oracles only for the rest)",
    )
    q.set_defaults(func=commands.cmd_score)

    q = sub.add_parser("optimize", help="RL fine-tuning of the prior toward a task (resumable run folder)")
    q.add_argument("--task", required=True, help="shipped task name (see 'matinvent tasks') or a task YAML file")
    q.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help="matinvent (default: Eq. 17 of the paper with our stabilisers, --rl-preset paper for Eq. 17 as"
        " written; level with weighted-denoising on"
        " evaluations per hit in benchmarks/rl_tasks.py, more diverse) | weighted-denoising (MatInvent as its"
        " official code trains; 2-3x cheaper per iteration) | reinforce | hill-climb | prior",
    )
    q.add_argument("--budget", type=int, required=True, help="oracle evaluations to spend")
    q.add_argument("--seed", type=int, default=0, help="seed of sampling and updates (a run is reproducible)")
    q.add_argument("--out", required=True, help="run folder (memory.sqlite, metrics.csv, checkpoint.pt, summary.json)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out (after a crash or kill)")
    q.add_argument("--config", help="YAML with optimisation settings (see configs/optimize.yaml)")
    q.add_argument(
        "--rl-preset",
        choices=["paper"],
        help="paper: the paper's Eq. 17 exactly (whole batch, summed log-probs over all steps, r as weight, no"
        " stabilisers) with the official code's beta, lambda, lr, replay and diversity filter; --config keys"
        " override it (docs/rl-settings.md)",
    )
    q.add_argument("--prior", help="prior checkpoint folder or bundled name (default mp20_masked)")
    q.add_argument("--device", help="cpu or cuda (default: the config's 'device', cpu)")
    q.add_argument("--threads", type=int, help="torch CPU threads (default: the config's 'threads', 0 = torch default)")
    q.add_argument(
        "--relax",
        choices=["auto", "mlip", "none"],
        help="mlip: relax each crystal once with SevenNet-0, gate the relaxed structure and score every property on"
        " it (MLIP formation energy / moduli / e_above_hull); none: score the generated structures (the paper's"
        " setting); default: the config's 'relax' (auto: mlip when the MLIP extra is installed)",
    )
    q.add_argument(
        "--stability",
        choices=["auto", "hull", "none"],
        help="hull: a hit also needs E_hull <= stability_max on the loop's relaxation; default: the config's "
        "'stability' (auto: hull when relaxing)",
    )
    q.add_argument("--tensorboard", metavar="DIR", help="also log each metrics row to TensorBoard in DIR")
    add_constraint_arguments(q)
    add_executor_arguments(q, config=True)
    q.set_defaults(func=commands.cmd_optimize)

    q = sub.add_parser(
        "save-prior", help="a finished optimize run's agent as a prior folder with TRAINING.md (e.g. the aligned prior)"
    )
    q.add_argument("run", help="run folder written by 'matinvent optimize' (finished: it has agent/)")
    q.add_argument("--out", required=True, help="prior folder to write (use it with --prior FOLDER)")
    q.add_argument("--name", help="the prior's name in TRAINING.md (default: the folder's name)")
    q.set_defaults(func=commands.cmd_save_prior)

    q = sub.add_parser("report", help="curves (PNG), a markdown summary (and --html a web page) of optimize runs")
    q.add_argument("runs", nargs="+", help="run folders")
    q.add_argument("--out", help="output folder (default: the run folder, or ./report for several runs)")
    q.add_argument("--top", type=int, default=10, help="top candidates listed per run")
    q.add_argument("--html", action="store_true", help="also write report.html (self-contained, offline; plotly)")
    q.add_argument("--symprec", type=float, default=0.1, help="symmetry tolerance (Å) of space groups, --html")
    q.set_defaults(func=commands.cmd_report)

    q = sub.add_parser("recheck", help="relax a run's distinct hits with an independent MLIP, re-score them, E_hull")
    q.add_argument("run", help="run folder written by 'matinvent optimize'")
    q.add_argument("--n-max", type=int, default=50, help="check a seeded random subset of at most N hits (0 = all)")
    q.add_argument("--seed", type=int, default=0, help="seed of the subset")
    q.add_argument("--hull", help="hull CSV (matinvent.oracles.hull; default: its shipped MP-20 hull)")
    q.add_argument("--task", help="task name or YAML file (default: the run's; needed for a user task file)")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    q.add_argument(
        "--model",
        choices=("sevennet-0", "chgnet"),
        help="MLIP that relaxes the hits (default: the one the loop did not use: chgnet for a run with relax: mlip, "
        "else sevennet-0)",
    )
    q.add_argument(
        "--no-mlip-moduli", action="store_true", help="skip the MLIP's own bulk/shear moduli (~30 relaxations per hit)"
    )
    q.add_argument(
        "--rehull",
        action="store_true",
        help="no relaxation: recompute E_hull and survival of the existing recheck against --hull (default: shipped)",
    )
    q.set_defaults(func=commands.cmd_recheck)

    q = sub.add_parser("export", help="write a run's hits (or all its scored crystals) with their properties")
    q.add_argument("run", help="run folder written by 'matinvent optimize'")
    q.add_argument("--hits", action="store_true", help="only the hits (without it: every valid, scored crystal)")
    q.add_argument("--top", type=int, default=0, help="at most N crystals, best reward first (0 = all)")
    q.add_argument("--keep-duplicates", action="store_true", help="every row, not one crystal per reduced formula")
    q.add_argument(
        "--format",
        choices=EXPORT_FORMATS,  # matinvent.io.export.FORMATS, without importing pandas to build the parser
        default="extxyz",
        help="extxyz: one file, properties in each frame's info | cif: a folder of CIFs + properties.csv |"
        " ase-db: an ASE database, properties as key-value pairs",
    )
    q.add_argument("--out", required=True, help="file to write (extxyz, ase-db) or folder (cif)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    q.set_defaults(func=commands.cmd_export)

    q = sub.add_parser("tasks", help="list the shipped tasks and their windows")
    q.set_defaults(func=commands.cmd_tasks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # first: --version and --help exit before torch is imported

    from matinvent.config_io import ConfigError
    from matinvent.crystal.record import CrystalError
    from matinvent.oracles import OracleError
    from matinvent.rl.run_lock import RunLockedError

    try:
        return args.func(args)
    except (ConfigError, CrystalError, OracleError, RunLockedError, OSError, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line per error
        print(f"matinvent {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
