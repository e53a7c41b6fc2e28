"""The ``matinvent`` command line: pretrain, sample, evaluate, score, tasks, optimize, report, recheck, export."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def refuse_non_empty(folder: str | Path) -> None:
    """``SampleFolderError`` naming ``folder`` and a few of its entries when it exists and is not empty."""
    from matinvent.sample_folder import SampleFolderError

    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if entries:
        names = ", ".join(entries[:5]) + (f" … ({len(entries)} entries)" if len(entries) > 5 else "")
        raise SampleFolderError(
            f"--out {folder} is not empty ({names}); choose a new or empty folder, or pass --overwrite to write"
            " into it (clearing earlier samples)"
        )


def add_executor_arguments(q: argparse.ArgumentParser, config: bool = False) -> None:
    """``--executor``, ``--scheduler``, ``--workers``: where the oracle calls run (``executor.make_executor``)."""
    from matinvent.executor import EXECUTORS

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


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from matinvent.config import load_pretrain_config
    from matinvent.train import pretrain

    cfg = load_pretrain_config(args.config)
    if args.device:
        cfg.train.device = args.device
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    ckpt = pretrain(args.data, cfg, args.out, resume=args.resume)
    print(f"checkpoint: {ckpt}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from matinvent.checkpoint import load_prior, resolve_checkpoint
    from matinvent.constraints import constraints_from_args
    from matinvent.sample_folder import refuse_old_samples
    from matinvent.sampling import sample_crystals, write_samples

    if not args.overwrite:
        refuse_old_samples(args.out)  # before the (long) sampling
        refuse_non_empty(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = resolve_checkpoint(args.checkpoint)
    model = load_prior(ckpt, device=args.device)
    cons = constraints_from_args(args)
    model.set_constraints(cons, source=f"checkpoint {ckpt}")  # errors before the (long) sampling
    crystals = sample_crystals(model, args.n, seed=args.seed, steps=args.steps, batch_size=args.batch_size)
    steps = args.steps or model.config.sample_steps or model.config.timesteps
    meta = {"checkpoint": str(ckpt), "seed": args.seed, "steps": steps}
    meta.update({"constraints": cons.to_dict()} if cons.active else {})
    write_samples(crystals, args.out, meta, overwrite=args.overwrite)
    n_ok = sum(c is not None for c in crystals)
    print(f"wrote {n_ok} CIF files and samples.extxyz to {args.out} ({len(crystals) - n_ok} degenerate samples)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from matinvent.datasets import read_cdvae_csv
    from matinvent.evaluate import add_stability, evaluate_crystals, stability_function, write_detailed
    from matinvent.sample_folder import read_sample_folder

    folder = read_sample_folder(args.dir)
    training = None
    if args.stability:  # fail before the long work: the module, its inputs
        stability_function()
        if args.stability_n < 1:
            raise ValueError(f"--stability-n must be >= 1, got {args.stability_n}")
        if args.hull and not Path(args.hull).exists():
            raise FileNotFoundError(f"--hull: no such file: {args.hull}")
        if args.training:
            training = [c.to_structure() for c in read_cdvae_csv(args.training).crystals]
    elif args.hull or args.training:
        raise ValueError("--hull and --training need --stability")
    reference = None
    if args.reference:
        reference = read_cdvae_csv(args.reference, limit=args.reference_limit).crystals
    ev = evaluate_crystals(
        folder.crystals, reference, progress=True, validity=args.validity, ids=folder.ids, errors=folder.errors
    )
    if args.stability:
        add_stability(ev, folder.crystals, args.stability_n, seed=args.seed, hull=args.hull, training=training)
    print(ev.table())
    out = Path(args.dir) / "evaluation.json"
    run_id = (folder.manifest or {}).get("run_id")
    out.write_text(json.dumps({**ev.to_dict(), "reference": args.reference, "run_id": run_id}, indent=2))
    print(f"wrote {out}")
    if args.save_detailed:
        print(f"wrote {write_detailed(ev.rows, args.save_detailed)}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from matinvent.executor import make_executor
    from matinvent.rewards import load_task
    from matinvent.scoring import Scorer, read_structure_items, scores_table

    task = load_task(args.task)
    if args.max_atoms < 1:
        raise ValueError(f"--max-atoms must be >= 1, got {args.max_atoms}")
    if args.oracle_timeout is not None and not 0 < args.oracle_timeout < float("inf"):
        raise ValueError(f"--oracle-timeout must be a positive number of seconds, got {args.oracle_timeout}")
    executor = make_executor(args.executor, args.scheduler, args.workers, args.oracle_timeout)  # checked first
    ids, crystals, read_reasons = read_structure_items(args.path, max_atoms=args.max_atoms)
    relax_kw = {"model": args.mlip_model} if args.relax == "mlip" else {}
    scorer = Scorer(
        task, relax=args.relax, validity=args.validity, timeout_s=args.oracle_timeout, executor=executor,
        cache=args.cache, **relax_kw,
    )  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tables = []
    n_invalid = n_failed = 0
    try:
        with tqdm(total=len(crystals), desc=f"score {task.name}", unit="structure") as bar:
            for start in range(0, len(crystals), args.batch_size):
                chunk = crystals[start : start + args.batch_size]
                scores = scorer(chunk)
                n_invalid += int((~scores.valid & ~scores.failed).sum())
                n_failed += int(scores.failed.sum())
                stop = start + len(chunk)
                part = scores_table(ids[start:stop], scores.structures, scores, read_reasons[start:stop])
                part.to_csv(out, mode="w" if start == 0 else "a", header=start == 0, index=False)  # kept if we crash
                tables.append(part)
                bar.update(len(chunk))
    finally:
        scorer.close()
    import pandas as pd

    table = pd.concat(tables, ignore_index=True)
    print(
        f"{len(table)} structures, {int(table['hit'].sum())} hits ({task.window_text()}), "
        f"mean reward {table['reward'].mean():.3f}, {n_invalid} invalid ({args.validity}; not scored), "
        f"{n_failed} failed; wrote {out}"
    )
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from matinvent.oracles import builtin_oracles
    from matinvent.rewards import builtin_tasks, load_task

    units = {name: cls.unit for name, cls in builtin_oracles().items()}
    rows = []
    for name in builtin_tasks():
        task = load_task(name)
        windows = "; ".join(f"{t.prop} {t.window()} {units.get(t.prop, '')}".strip() for t in task.targets)
        rows.append((name, task.reduce, windows))
    w = max(len(r[0]) for r in rows)
    print(f"{'task':<{w}}  reduce  window (a hit lies inside every window)")
    for name, reduce, windows in rows:
        print(f"{name:<{w}}  {reduce:<6}  {windows}")
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from matinvent.constraints import constraints_from_args, merged_constraints
    from matinvent.rl import load_rl_config, optimize
    from matinvent.rl.loop import check_method

    check_method(args.method)
    cfg = load_rl_config(args.config)
    for key in ("prior", "device", "threads", "relax", "executor", "scheduler", "workers"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.constraints = merged_constraints(cfg.constraints, constraints_from_args(args)).to_dict()
    summary = optimize(
        args.task, args.method, args.budget, args.seed, args.out, cfg, resume=args.resume, tensorboard=args.tensorboard
    )
    burden = f"{summary['burden']:.2f}" if summary["burden"] is not None else f"n/a ({summary['hits']} hits)"
    div = summary["diversity_ratio"]
    print(
        f"{summary['method']} on {summary['task']}: {summary['evaluations']} evaluations, {summary['hits']} hits, "
        f"Burden {burden}, diversity ratio {'n/a' if div is None else f'{div:.3f}'}; run folder {args.out}"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matinvent.report import write_report

    runs, out = [Path(d) for d in args.runs], Path(args.out) if args.out else None
    path = write_report(runs, out, top=args.top)
    print(f"wrote {path}")
    if args.html:
        from matinvent.report_html import write_html_report

        print(f"wrote {write_html_report(runs, path.parent, top=args.top, symprec=args.symprec)}")
    return 0


def _cmd_recheck(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matinvent.recheck import RECHECK_JSON, headline_table, recheck_run

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = recheck_run(
        args.run,
        n_max=args.n_max or None,
        seed=args.seed,
        hull=args.hull,
        task=args.task,
        mlip_moduli=not args.no_mlip_moduli,
    )
    print(headline_table(result))
    print(f"wrote {Path(args.run) / RECHECK_JSON}, recheck.csv and the relaxed CIFs in recheck/")
    return 0


EXPORT_FORMATS = ("extxyz", "cif", "ase-db")


def _cmd_export(args: argparse.Namespace) -> int:
    from matinvent.export import export_run

    result = export_run(
        args.run,
        args.out,
        fmt=args.format,
        hits_only=args.hits,
        top=args.top,
        distinct=not args.keep_duplicates,
        overwrite=args.overwrite,
    )
    what = "hits" if args.hits else "crystals"
    print(f"wrote {result.n} {what} of {args.run} to {result.path} ({result.fmt})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from matinvent import __version__
    from matinvent.constraints import add_constraint_arguments
    from matinvent.evaluate import EVALUATION_GATES
    from matinvent.validity import GATES

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
    q.set_defaults(func=_cmd_pretrain)

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
    q.set_defaults(func=_cmd_sample)

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
    q.add_argument("--stability", action="store_true", help="run matinvent.stability on physically valid crystals")
    q.add_argument("--stability-n", type=int, default=200, help="crystals drawn (seeded) for --stability")
    q.add_argument("--hull", help="hull CSV for --stability (matinvent.hull; default: its shipped MP-20 hull)")
    q.add_argument("--training", help="CDVAE-style CSV of training structures for --stability (novelty, SUN)")
    q.add_argument("--seed", type=int, default=0, help="seed of the --stability subset")
    q.set_defaults(func=_cmd_evaluate)

    from matinvent.structure_checks import MAX_ATOMS

    q = sub.add_parser("score", help="properties, reward and hit of each structure for a task -> CSV")
    q.add_argument("path", help="folder of CIF files, an .extxyz file or a CDVAE .csv[.gz]")
    q.add_argument("--task", required=True, help="shipped task name (see 'matinvent tasks') or a task YAML file")
    q.add_argument("--relax", choices=["mlip"], help="relax with an MLIP first; its energies/EOS/elastic tensor")
    q.add_argument("--mlip-model", default="sevennet-0", help="MLIP for --relax mlip: sevennet-0 or chgnet")
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
    q.set_defaults(func=_cmd_score)

    q = sub.add_parser("optimize", help="RL fine-tuning of the prior toward a task (resumable run folder)")
    q.add_argument("--task", required=True, help="shipped task name (see 'matinvent tasks') or a task YAML file")
    q.add_argument(
        "--method",
        default="weighted-denoising",
        help="weighted-denoising (default: MatInvent as its official code trains, the most sample-efficient in"
        " benchmarks/rl_tasks.py) | matinvent (the paper's Eq. 17) | reinforce | hill-climb | prior",
    )
    q.add_argument("--budget", type=int, required=True, help="oracle evaluations to spend")
    q.add_argument("--seed", type=int, default=0, help="seed of sampling and updates (a run is reproducible)")
    q.add_argument("--out", required=True, help="run folder (memory.sqlite, metrics.csv, checkpoint.pt, summary.json)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out (after a crash or kill)")
    q.add_argument("--config", help="YAML with optimisation settings (see configs/optimize.yaml)")
    q.add_argument("--prior", help="prior checkpoint folder or bundled name (default mp20_masked)")
    q.add_argument("--device", help="cpu or cuda (default: the config's 'device', cpu)")
    q.add_argument("--threads", type=int, help="torch CPU threads (default: the config's 'threads', 0 = torch default)")
    q.add_argument(
        "--relax",
        choices=["mlip"],
        help="relax each crystal once with SevenNet-0 and score every property on the relaxed structure"
        " (MLIP formation energy / moduli / e_above_hull; needs the mlip extra; default: the config's 'relax')",
    )
    q.add_argument("--tensorboard", metavar="DIR", help="also log each metrics row to TensorBoard in DIR")
    add_constraint_arguments(q)
    add_executor_arguments(q, config=True)
    q.set_defaults(func=_cmd_optimize)

    q = sub.add_parser("report", help="curves (PNG), a markdown summary (and --html a web page) of optimize runs")
    q.add_argument("runs", nargs="+", help="run folders")
    q.add_argument("--out", help="output folder (default: the run folder, or ./report for several runs)")
    q.add_argument("--top", type=int, default=10, help="top candidates listed per run")
    q.add_argument("--html", action="store_true", help="also write report.html (self-contained, offline; plotly)")
    q.add_argument("--symprec", type=float, default=0.1, help="symmetry tolerance (Å) of space groups, --html")
    q.set_defaults(func=_cmd_report)

    q = sub.add_parser("recheck", help="relax a run's distinct hits (SevenNet-0), re-score them, E_hull")
    q.add_argument("run", help="run folder written by 'matinvent optimize'")
    q.add_argument("--n-max", type=int, default=50, help="check a seeded random subset of at most N hits (0 = all)")
    q.add_argument("--seed", type=int, default=0, help="seed of the subset")
    q.add_argument("--hull", help="hull CSV (matinvent.hull; default: its shipped MP-20 hull)")
    q.add_argument("--task", help="task name or YAML file (default: the run's; needed for a user task file)")
    q.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    q.add_argument(
        "--no-mlip-moduli", action="store_true", help="skip the MLIP's own bulk/shear moduli (~30 relaxations per hit)"
    )
    q.set_defaults(func=_cmd_recheck)

    q = sub.add_parser("export", help="write a run's hits (or all its scored crystals) with their properties")
    q.add_argument("run", help="run folder written by 'matinvent optimize'")
    q.add_argument("--hits", action="store_true", help="only the hits (without it: every valid, scored crystal)")
    q.add_argument("--top", type=int, default=0, help="at most N crystals, best reward first (0 = all)")
    q.add_argument("--keep-duplicates", action="store_true", help="every row, not one crystal per reduced formula")
    q.add_argument(
        "--format",
        choices=EXPORT_FORMATS,  # matinvent.export.FORMATS, without importing pandas to build the parser
        default="extxyz",
        help="extxyz: one file, properties in each frame's info | cif: a folder of CIFs + properties.csv |"
        " ase-db: an ASE database, properties as key-value pairs",
    )
    q.add_argument("--out", required=True, help="file to write (extxyz, ase-db) or folder (cif)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    q.set_defaults(func=_cmd_export)

    q = sub.add_parser("tasks", help="list the shipped tasks and their windows")
    q.set_defaults(func=_cmd_tasks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # first: --version and --help exit before torch is imported

    from matinvent.config import ConfigError
    from matinvent.crystal import CrystalError
    from matinvent.oracles import OracleError
    from matinvent.run_lock import RunLockedError

    try:
        return args.func(args)
    except (ConfigError, CrystalError, OracleError, RunLockedError, OSError, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line per error
        print(f"matinvent {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
