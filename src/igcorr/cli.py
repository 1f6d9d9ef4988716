"""The ``igcorr`` command line."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="igcorr", description="Dataset-wise attribution of deep networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a CNN on the bundled digits and write per-class IGC maps")
    demo.add_argument("--out", default="igcorr-out/demo", help="output folder (default: igcorr-out/demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    demo.add_argument("--steps", type=int, default=32, help="quadrature steps per path (default: 32)")
    demo.add_argument("--baselines", type=int, default=8, help="shared dataset baselines (default: 8)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "demo":
        from igcorr.benchmarks.digits import run_demo

        report = run_demo(args.out, epochs=args.epochs, n_steps=args.steps, n_baselines=args.baselines,
                          seed=args.seed, progress=not args.no_progress)
        print(f"test accuracy {report['test_accuracy']:.3f}; IGC took {report['igc_seconds']:.1f} s")
        print(f"per-class r:   {' '.join(f'{r:.3f}' for r in report['correlation'])}")
        print(f"per-class Σmap: {' '.join(f'{s:.3f}' for s in report['map_sums'])}")
        print(f"wrote {report['paths']['figure']}, {report['paths']['result']}, {report['paths']['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
