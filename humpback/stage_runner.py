"""The plumbing every stage shares, once: arguments, logging, params, and errors → a clear message and exit 1.

A stage file declares its arguments and one function of (args, params):

    def arguments(parser): parser.add_argument("--out", required=True)
    def run(args, params): ...
    main = stage("prepare_seed", __doc__, arguments, run)   # main(argv) -> exit code, for tests too
    if __name__ == "__main__":
        sys.exit(main())

Errors a user can cause (a bad params value, a malformed record, a missing file, a source that cannot be read)
print `<stage>: error: <message>` and exit 1 without a traceback; `HUMPBACK_DEBUG=1` shows the traceback.

With `HUMPBACK_PARAMS_READS=<file>` set, the runner records every params key the stage read and appends
`{"stage": <DVC stage name>, "keys": [...]}` to that file: tests/test_stage_deps.py compares it with dvc.yaml.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from humpback.params import DEFAULT_PARAMS_FILE, Params, load_params, track_reads
from humpback.sources.counts import SourceError

# What a user's input can cause; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotImplementedError,
    ImportError,
    SourceError,
)
READS_ENV = "HUMPBACK_PARAMS_READS"


def stage(
    name: str,
    doc: str | None,
    arguments: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace, Params], int | None],
    launch: Callable[[Params, list[str]], None] | None = None,
) -> Callable[..., int]:
    """The stage's `main(argv=None) -> exit code`: parse arguments, load params, run `body` (None means 0).

    `launch(params, argv)`: called once params are read, before `body`; it may replace this process with
    the stage's module under a multi-process launcher (humpback/training/launch.py), or return to run it here."""
    return lambda argv=None: run(name, doc, arguments, body, argv, launch)


def run(
    name: str,
    doc: str | None,
    arguments: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace, Params], int | None],
    argv: list[str] | None = None,
    launch: Callable[[Params, list[str]], None] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=(doc or name).strip().splitlines()[0])
    arguments(parser)
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: params.yaml)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    # A time on every line: a stage runs for minutes here and for hours at the paper's scale.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    reads = track_reads() if os.environ.get(READS_ENV) else None
    try:
        params = load_params(args.params)
        if launch is not None:
            launch(params, argv)
        code = body(args, params) or 0
    except USER_ERRORS as exc:
        if os.environ.get("HUMPBACK_DEBUG"):
            raise
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    if reads is not None:
        record = {"stage": os.environ.get("DVC_STAGE", name), "keys": sorted(reads)}
        with Path(os.environ[READS_ENV]).open("a") as f:
            f.write(json.dumps(record) + "\n")
    return code
