"""The handlers of the ``matinvent`` commands (``matinvent.cli.parser`` builds the parser and calls them).

Each ``cmd_<name>(args) -> exit code`` imports what it needs on first use, so ``--help`` and
``--version`` never import torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def refuse_non_empty(folder: str | Path) -> None:
    """``SampleFolderError`` naming ``folder`` and a few of its entries when it exists and is not empty."""
    from matinvent.io.sample_folder import SampleFolderError

    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if entries:
        names = ", ".join(entries[:5]) + (f" … ({len(entries)} entries)" if len(entries) > 5 else "")
        raise SampleFolderError(
            f"--out {folder} is not empty ({names}); choose a new or empty folder, or pass --overwrite to write"
            " into it (clearing earlier samples)"
        )


def cmd_pretrain(args: argparse.Namespace) -> int:
    from matinvent.prior.pretrain import pretrain
    from matinvent.prior.pretrain_config import load_pretrain_config

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


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from matinvent.cli.constraint_args import constraints_from_args
    from matinvent.crystal.constraints import merged_constraints
    from matinvent.io.sample_folder import refuse_old_samples, write_samples
    from matinvent.prior.checkpoint import load_prior, prior_constraints, resolve_checkpoint
    from matinvent.prior.sampler import sample_crystals

    if not args.overwrite:
        refuse_old_samples(args.out)  # before the (long) sampling
        refuse_non_empty(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = resolve_checkpoint(args.checkpoint)
    model = load_prior(ckpt, device=args.device)
    own = prior_constraints(ckpt)
    if own.active:
        given = {k: v for k, v in own.to_dict().items() if v not in (None, [])}
        print(f"{ckpt} was fine-tuned under the constraints {given}: sampling under them too")
    cons = merged_constraints(own, constraints_from_args(args))
    model.set_constraints(cons, source=f"checkpoint {ckpt}")  # errors before the (long) sampling
    crystals = sample_crystals(model, args.n, seed=args.seed, steps=args.steps, batch_size=args.batch_size)
    steps = args.steps or model.config.sample_steps or model.config.timesteps
    meta = {"checkpoint": str(ckpt), "seed": args.seed, "steps": steps}
    meta.update({"constraints": cons.to_dict()} if cons.active else {})
    write_samples(crystals, args.out, meta, overwrite=args.overwrite)
    n_ok = sum(c is not None for c in crystals)
    print(f"wrote {n_ok} CIF files and samples.extxyz to {args.out} ({len(crystals) - n_ok} degenerate samples)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from matinvent.evaluation.sample_metrics import add_stability, evaluate_crystals, stability_function, write_detailed
    from matinvent.io.cdvae_csv import read_cdvae_csv
    from matinvent.io.sample_folder import read_sample_folder

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
        add_stability(
            ev, folder.crystals, args.stability_n, seed=args.seed, hull=args.hull, training=training,
            engine=args.stability_engine,
        )  # fmt: skip
    print(ev.table())
    out = Path(args.dir) / "evaluation.json"
    run_id = (folder.manifest or {}).get("run_id")
    out.write_text(json.dumps({**ev.to_dict(), "reference": args.reference, "run_id": run_id}, indent=2))
    print(f"wrote {out}")
    if args.save_detailed:
        print(f"wrote {write_detailed(ev.rows, args.save_detailed)}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from matinvent.io.structure_files import read_structure_items
    from matinvent.scoring.executors import make_executor
    from matinvent.scoring.scorer import Scorer, resolve_pipeline, scores_table
    from matinvent.scoring.tasks import load_task

    task = load_task(args.task)
    if args.max_atoms < 1:
        raise ValueError(f"--max-atoms must be >= 1, got {args.max_atoms}")
    if args.oracle_timeout is not None and not 0 < args.oracle_timeout < float("inf"):
        raise ValueError(f"--oracle-timeout must be a positive number of seconds, got {args.oracle_timeout}")
    executor = make_executor(args.executor, args.scheduler, args.workers, args.oracle_timeout)  # checked first
    ids, crystals, read_reasons = read_structure_items(args.path, max_atoms=args.max_atoms)
    relax, stability = resolve_pipeline(args.relax, args.stability, task)
    relax_kw = {"model": args.mlip_model, "engine": "batched"} if relax == "mlip" else {}
    scorer = Scorer(
        task, relax=relax, validity=args.validity, timeout_s=args.oracle_timeout, executor=executor,
        cache=args.cache, stability=stability, **relax_kw,
    )  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tables = []
    n_invalid = n_failed = 0
    try:
        with tqdm(total=len(crystals), desc=f"score {task.name}", unit="structure") as bar:
            # a relaxation or a DFT call per structure: the bar's postfix moves as each result arrives
            scorer.on_progress = lambda stage, done, total: bar.set_postfix_str(f"{stage} {done}/{total}")
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


def cmd_tasks(args: argparse.Namespace) -> int:
    from matinvent.oracles import builtin_oracles
    from matinvent.scoring.tasks import builtin_tasks, load_task

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


def cmd_optimize(args: argparse.Namespace) -> int:
    from matinvent.cli.constraint_args import constraints_from_args
    from matinvent.crystal.constraints import merged_constraints
    from matinvent.rl import load_rl_config, optimize
    from matinvent.rl.loop import check_method

    check_method(args.method)
    cfg = load_rl_config(args.config, preset=args.rl_preset)
    for key in ("prior", "device", "threads", "relax", "stability", "executor", "scheduler", "workers"):
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


def cmd_save_prior(args: argparse.Namespace) -> int:
    from matinvent.rl.prior_export import export_prior

    out = export_prior(args.run, args.out, args.name)
    print(f"wrote prior folder {out} (sample it with: matinvent sample --checkpoint {out})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matinvent.report.markdown import write_report

    runs, out = [Path(d) for d in args.runs], Path(args.out) if args.out else None
    path = write_report(runs, out, top=args.top)
    print(f"wrote {path}")
    if args.html:
        from matinvent.report.html import write_html_report

        print(f"wrote {write_html_report(runs, path.parent, top=args.top, symprec=args.symprec)}")
    return 0


def cmd_recheck(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matinvent.evaluation.recheck import RECHECK_JSON, headline_table, recheck_run, rehull_run

    if args.rehull:
        result = rehull_run(args.run, hull=args.hull)
        print(headline_table(result))
        print(f"rewrote {Path(args.run) / RECHECK_JSON} and recheck.csv against {result['hull']}")
        return 0
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
        model=args.model,
    )
    print(headline_table(result))
    print(f"wrote {Path(args.run) / RECHECK_JSON}, recheck.csv and the relaxed CIFs in recheck/")
    return 0


EXPORT_FORMATS = ("extxyz", "cif", "ase-db")


def cmd_export(args: argparse.Namespace) -> int:
    from matinvent.io.export import export_run

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
