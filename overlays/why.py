"""Why is a package in a lock? Print its path of requirements back to a seed.

``python3 -m overlays.why STACK PACKAGE`` reads ``stacks/STACK.lock.toml`` and prints one
line per reason the package has, each the shortest path to a seed::

    libbar-1.0-1.x86_64 <- required by libfoo for libbar.so.1()(64bit) <- seed libfoo: "reason"
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fexstack import paths
from fexstack.errors import FexstackError, LockError, format_error
from fexstack.nevra import format_nevra
from overlays import lockfile
from overlays.lockfile import Lock, Reason
from overlays.resolver import BasePackageLike, path_to_seed

LOCK_SUFFIX = ".lock.toml"


def _step(package: str, reason: Reason) -> str:
    if reason.seed is not None:
        return f'seed {package}: "{reason.seed}"'
    return f"required by {reason.required_by} for {reason.capability}"


def in_base(
    package_name: str,
    base_packages: Sequence[BasePackageLike],
    seeds: Mapping[str, str] | None = None,
) -> list[str]:
    """``P-EVR.arch: in the base`` lines for a package the base carries (a seed of it is
    documentation: the lock leaves it out), or [] when the base does not carry it."""
    lines = []
    for bp in base_packages:
        if bp.name != package_name:
            continue
        nevra = format_nevra(bp.name, int(bp.epoch or 0), bp.version, bp.release, bp.arch)
        line = f"{nevra}: in the base"
        reason = (seeds or {}).get(package_name)
        if reason is not None:
            line += f' <- seed {package_name}: "{reason}" (documentation: nothing to lock)'
        lines.append(line)
    return lines


def why(
    lock: Lock,
    package_name: str,
    base_packages: Sequence[BasePackageLike] = (),
    seeds: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per reason of ``package_name``: its shortest path to a seed; for a package
    the base carries instead, that it is in the base (:func:`in_base`)."""
    pkg = lock.package(package_name)
    if pkg is None and (found := in_base(package_name, base_packages, seeds)):
        return found
    if pkg is None:
        names = [p.name for p in lock.packages]
        close = difflib.get_close_matches(package_name, names, n=3)
        raise LockError(
            f"{package_name} is not in the lock of stack {lock.stack}"
            + (f" (did you mean {', '.join(close)}?)" if close else ""),
            "a package the base provides is never in the lock; list the lock's packages "
            f"in stacks/{lock.stack}{LOCK_SUFFIX}",
        )
    reasons = {p.name: p.reasons for p in lock.packages}
    lines = []
    for reason in sorted(pkg.reasons, key=lambda r: (r.seed is None, str(r))):
        if reason.seed is not None:
            chain = [(pkg.name, reason)]
        else:
            parent = reason.required_by or ""
            rest = path_to_seed(parent, reasons)
            if rest is None:
                lines.append(f"{pkg.nevra} <- {_step(pkg.name, reason)} <- (no path to a seed)")
                continue
            chain = [(pkg.name, reason), *rest]
        text = " <- ".join(_step(name, r) for name, r in chain)
        lines.append(f"{pkg.nevra} <- {text}")
    return list(dict.fromkeys(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m overlays.why",
        description="Print the path of requirements from a locked package to a seed.",
    )
    parser.add_argument("stack", help="the stack's name (stacks/<name>.toml)")
    parser.add_argument("package", help="a package name from the stack's lock")
    parser.add_argument(
        "--stacks-dir",
        type=Path,
        default=paths.PROJECT_ROOT / "stacks",
        help="the folder holding the stacks (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        lock = lockfile.read(args.stacks_dir / f"{args.stack}{LOCK_SUFFIX}")
        base: Sequence[BasePackageLike] = ()
        seeds: Mapping[str, str] = {}
        if lock.package(args.package) is None:  # the base may carry it
            from overlays.locking import base_packages_of
            from overlays.stack import load_stack

            try:
                stack = load_stack(args.stacks_dir, args.stack)
                base, seeds = base_packages_of(stack), stack.seeds
            except FexstackError as exc:
                print(f"why: the base's package list is not readable here ({exc.message}); "
                      "answering from the lock alone", file=sys.stderr)
        for line in why(lock, args.package, base, seeds):
            print(line)
    except FexstackError as err:
        print(format_error(err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
