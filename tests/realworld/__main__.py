"""``python3 -m tests.realworld build|path``: build (or verify) the corpus by hand.

Run it through ./devroot (it needs root for ``ldconfig -r`` and the loader's chroot).
"""

from __future__ import annotations

import argparse
import sys
import time

from fexstack.errors import FexstackError, format_error
from tests.realworld import corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.realworld")
    parser.add_argument(
        "command", choices=("build", "path"), help="build (or verify), or print the entry path"
    )
    parser.add_argument(
        "--suite", default=corpus.packages.SUITE, choices=sorted(corpus.packages.SUITES),
        help="the Debian suite (default: trixie)",
    )
    args = parser.parse_args(argv)
    if args.command == "path":
        print(corpus.cache_root() / corpus.key(corpus.suite(args.suite)))
        return 0
    started = time.monotonic()
    try:
        found = corpus.ensure(suite_name=args.suite)
    except FexstackError as err:
        print(format_error(err), file=sys.stderr)
        return 1
    info = found.info
    print(f"corpus:   {found.root}")
    print(f"suite:    {found.suite} (release {found.release})")
    print(f"packages: {len(found.packages)} ({len(found.base_names)} in the base)")
    sizes = info["sizes_mb"]
    print(f"sizes:    debs {sizes['debs']} MB, rpms {sizes['rpms']} MB, "
          f"base image {sizes['base_image']} MB")
    print(f"cold build timings (s): {info['timings_s']}")
    print(f"this run: {time.monotonic() - started:.1f} s")
    print(f"base:     {found.base_toml} (lib_dirs {', '.join(found.lib_dirs)})")
    print(f"repo:     {found.repos_toml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
