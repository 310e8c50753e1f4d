"""``theia <verb>``: one command line for the whole stack.

Each verb lives in its own module that defines ``add_arguments(parser)`` and
``main(args) -> int``. Modules are imported only when their verb runs, so ``theia --help``
and the deploy verbs never import torch. (Learning-side verbs live in ``training``; this
table names them as strings only, which keeps ``theia_ros`` free of ``training`` imports.)

Example::

    theia encode --checkpoint theia_tiny --image door.png --out feats.npz --pca-png pca/
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from theia_ros import __version__
from theia_ros.errors import TheiaError

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("training.cli.encode", "spatial tokens (and PCA pictures) for images"),
    "analyze": ("training.cli.analyze", "representation measures: norm entropy, PCA AUC, ..."),
    "distill": ("training.cli.distill", "distill Theia: prepare | stats | extract | train"),
    "dataset": ("training.cli.dataset", "demo datasets: import-bag | info | view"),
    "train-policy": ("training.cli.train_policy", "train a CNN-MLP or diffusion policy"),
    "export": ("training.cli.export", "export a policy to an ONNX bundle"),
    "bench": ("theia_ros.cli.bench", "latency of encoder, head and control step per backend"),
    "record": ("theia_ros.cli.record", "teleoperate and record demonstrations"),
    "run": ("theia_ros.cli.run", "run a policy bundle closed-loop on a robot or the sim"),
    "demo": ("training.cli.demo", "sim demo: record -> train -> export -> run at 5 Hz"),
    "eval": ("training.cli.eval", "evaluate a policy folder or bundle on a sim task"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {verb:<13} {help_}" for verb, (_, help_) in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="theia",
        description="Theia encoders, robot policies and their deployment.",
        epilog="commands:\n" + "\n".join(lines) + "\n\n'theia <command> --help' for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"theia-ros {__version__}")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        close = difflib.get_close_matches(verb, COMMANDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose from {sorted(COMMANDS)}"
        top.error(f"unknown command {verb!r}{hint}")
    module_name, help_ = COMMANDS[verb]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"theia {verb}: missing dependency {exc.name!r}; "
              "install the extras: pip install -e '.[all]'", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"theia {verb}", description=module.__doc__ or help_,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except TheiaError as exc:
        print(f"theia {verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"theia {verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
