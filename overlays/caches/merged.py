"""The child side of cache generation: mount the merged view, run the tools, exit.

Runs as ``unshare -m --propagation private python3 -m overlays.caches.merged <spec>``
(root): a writable overlayfs of the overlay's staging tree over the lower layers, so the
tools write only into its upper folder, which the parent reads. Each job runs with
``chroot`` into the view (the view's own x86_64 tool) or on the host with paths under the
mount (an arch-independent format). The results go to ``<spec>.result.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fexstack import command, jsonio

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/"}


def _mount(spec: dict[str, Any]) -> Path:
    root = Path(spec["root"])
    lowerdir = ":".join(spec["lowers"])
    command.run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={lowerdir},upperdir={spec['upper']},workdir={spec['work']}",
                 root])  # fmt: skip
    for sub in ("proc", "dev"):
        (root / sub).mkdir(exist_ok=True)
    command.run(["mount", "-t", "proc", "proc", root / "proc"])
    (root / "dev/null").touch()
    command.run(["mount", "--bind", "/dev/null", root / "dev/null"])
    return root


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec_path = Path(args[0])
    spec = jsonio.read(spec_path)
    assert isinstance(spec, dict)
    root = _mount(spec)
    results = []
    for job in spec["jobs"]:
        if job["chroot"]:
            full = ["chroot", str(root), *job["argv"]]
        else:
            full = [job["argv"][0], *(str(root) + a if a.startswith("/") else a
                                      for a in job["argv"][1:])]  # fmt: skip
        proc = command.run(full, check=False, env=ENV)
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        results.append({"name": job["name"], "returncode": proc.returncode,
                        "output": text[-2000:]})  # fmt: skip
    for sub in ("dev/null", "proc"):
        command.run(["umount", "-l", root / sub], check=False)
    jsonio.write(spec_path.with_suffix(".result.json"), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
