"""The ``matinvent`` command line: pretrain, sample, evaluate."""

from __future__ import annotations

import argparse
import sys


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matinvent", description="Goal-directed crystal design with RL-tuned diffusion.")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
