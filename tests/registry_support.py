"""A real OCI registry for the tests: Debian's docker-registry (the reference
distribution registry), on 127.0.0.1 with a free port and its own storage folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BINARY = "docker-registry"
START_SECONDS = 30.0


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:<port>
    storage: Path

    def ref(self, repository: str, tag: str = "v1") -> str:
        return f"{self.host}/{repository}:{tag}"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hexpart = digest.removeprefix("sha256:")
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _up(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_registry(workdir: Path) -> Iterator[Registry]:
    """Start the registry, wait until /v2/ answers, stop it afterwards."""
    if shutil.which(BINARY) is None:
        raise RuntimeError(f"{BINARY} is not installed (it is in .devroot/packages.txt)")
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    host = f"127.0.0.1:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n"
    )
    log = (workdir / "registry.log").open("w")
    proc = subprocess.Popen(
        [BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _up(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{BINARY} did not start on {host}: {(workdir / 'registry.log').read_text()}"
                )
            time.sleep(0.05)
        yield Registry(host, storage)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
