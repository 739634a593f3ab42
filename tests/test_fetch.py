"""The fetch step against real RPMs served over HTTP from 127.0.0.1 or as file:// URLs."""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fexstack import jsonio
from fexstack.errors import FetchError
from overlays import fetch
from overlays.stack import Repo
from testkit.factory import Factory, File, GpgKey, Package
from tests.craft_rpm import lock_of, locked

FAST = {"tries": 3, "backoff": 0.01, "timeout": 5.0}
REPOS = {"test": Repo(id="test", baseurl=("http://127.0.0.1/",))}


def pkgs(prefix: str, count: int) -> list[Package]:
    return [
        Package(
            name=f"{prefix}{i}",
            contents=(File(f"/usr/share/{prefix}{i}/data.txt", f"{prefix} {i}\n".encode() * 50),),
            autoreq=False,
        )
        for i in range(count)
    ]


@dataclass
class Server:
    """A repo folder served over HTTP; ``faults`` maps a file name to what goes wrong."""

    root: Path
    faults: dict[str, list[str]] = field(default_factory=dict)  # name -> faults, one per request
    requests: dict[str, int] = field(default_factory=dict)
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    state = Server(root=tmp_path / "served")
    state.root.mkdir()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            state.requests[name] = state.requests.get(name, 0) + 1
            queue = state.faults.get(name, [])
            fault = queue.pop(0) if queue else "ok"
            if fault == "503":
                self.send_error(503, "Service Unavailable")
                return
            try:
                data = (state.root / name).read_bytes()
            except FileNotFoundError:
                self.send_error(404, "Not Found")
                return
            if fault == "corrupt":
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve(factory: Factory, server: Server, packages: list[Package]) -> list:
    """Copy the packages' RPMs into the served folder; their lock entries."""
    entries = []
    for pkg in packages:
        rpm = factory.rpm(pkg)
        shutil.copyfile(rpm, server.root / rpm.name)
        entries.append(locked(pkg.name, server.root / rpm.name, url=server.url(rpm.name)))
    return entries


def leftovers(cache: Path) -> list[str]:
    folder = cache / fetch.RPMS
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_hit_needs_no_network(factory: Factory, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lock = lock_of(serve(factory, server, pkgs("hit", 5)))
    record = tmp_path / "build" / "demo" / "fetch.json"
    out = io.StringIO()

    first = fetch.fetch_lock(lock, repos=REPOS, cache=cache, record=record, progress=out, **FAST)
    assert first.downloaded == tuple(f"hit{i}" for i in range(5))
    assert first.cached == ()
    for pkg in lock.packages:
        path = first.rpms[pkg.name]
        assert path == cache / "rpms" / f"{pkg.sha256}.rpm"
        assert (
            fetch.rpm_path(cache, pkg.sha256).read_bytes()
            == (server.root / Path(pkg.url).name).read_bytes()
        )
    data = jsonio.read(record)
    assert (data["packages"], data["downloaded"], data["cached"]) == (5, 5, 0)
    assert data["bytes_downloaded"] == sum(p.size for p in lock.packages)
    assert {r["source"] for r in data["rpms"]} == {"downloaded"}
    # Not a terminal: no progress redraws, just the one summary line.
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
    assert "5 downloaded" in out.getvalue()

    shutil.rmtree(server.root)
    server.port = 9  # nothing listens there: any download attempt would fail
    second = fetch.fetch_lock(lock, repos=REPOS, cache=cache, record=record, progress=out, **FAST)
    assert second.downloaded == ()
    assert len(second.cached) == 5
    data = jsonio.read(record)
    assert (data["downloaded"], data["cached"], data["bytes_downloaded"]) == (0, 5, 0)
    assert sum(server.requests.values()) == 5


def test_corrupt_download_is_refused_and_not_cached(
    factory: Factory, server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (entry,) = serve(factory, server, pkgs("corrupt", 1))
    name = Path(entry.url).name
    server.faults[name] = ["corrupt"] * 5
    with pytest.raises(FetchError) as err:
        fetch.fetch_lock(
            lock_of([entry]), repos=REPOS, cache=cache, record=None, progress=io.StringIO(), **FAST
        )
    message = err.value.message
    assert "corrupt0" in message
    assert entry.url in message
    assert f"expected {entry.size} bytes with sha256 {entry.sha256}" in message
    actual = fetch.hashlib.sha256(
        (server.root / name).read_bytes()[:-1]
        + bytes([(server.root / name).read_bytes()[-1] ^ 255])
    ).hexdigest()
    assert f"got {entry.size} bytes with sha256 {actual}" in message
    assert server.requests[name] == 1  # wrong bytes are not a transient failure
    assert leftovers(cache) == []


def test_truncated_download_is_retried_then_refused(
    factory: Factory, server: Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (entry,) = serve(factory, server, pkgs("short", 1))
    name = Path(entry.url).name
    server.faults[name] = ["truncate"] * 3
    with pytest.raises(FetchError) as err:
        fetch.fetch_lock(
            lock_of([entry]), repos=REPOS, cache=cache, record=None, progress=io.StringIO(), **FAST
        )
    message = err.value.message
    assert "short0" in message and entry.url in message and "after 3 tries" in message
    assert "IncompleteRead" in message or "ended after" in message
    assert server.requests[name] == 3
    assert leftovers(cache) == []


def test_transient_failure_is_retried(factory: Factory, server: Server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    entries = serve(factory, server, pkgs("flaky", 2))
    flaky = Path(entries[0].url).name
    server.faults[flaky] = ["503", "truncate"]
    result = fetch.fetch_lock(
        lock_of(entries), repos=REPOS, cache=cache, record=None, progress=io.StringIO(), **FAST
    )
    assert result.downloaded == ("flaky0", "flaky1")
    assert server.requests[flaky] == 3
    assert (
        fetch.rpm_path(cache, entries[0].sha256).read_bytes() == (server.root / flaky).read_bytes()
    )
    assert leftovers(cache) == sorted(f"{e.sha256}.rpm" for e in entries)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal(factory: Factory, tmp_path: Path) -> None:
    rpms = [factory.rpm(p) for p in pkgs("tty", 2)]
    lock = lock_of([locked(f"tty{i}", rpm, repo="local") for i, rpm in enumerate(rpms)])
    repos = {"local": Repo(id="local")}
    out = Terminal()
    fetch.fetch_lock(lock, repos=repos, cache=tmp_path / "cache", record=None, progress=out)
    text = out.getvalue()
    assert "\rfetch demo: 2/2 packages" in text
    assert re.search(
        r"\r\x1b\[Kfetch demo: 2 packages, 2 downloaded .*, 0 cached, [0-9.]+ s\n$", text
    )


def test_missing_package_is_not_retried(factory: Factory, server: Server, tmp_path: Path) -> None:
    (entry,) = serve(factory, server, pkgs("gone", 1))
    (server.root / Path(entry.url).name).unlink()
    with pytest.raises(FetchError) as err:
        fetch.fetch_lock(
            lock_of([entry]),
            repos=REPOS,
            cache=tmp_path / "cache",
            record=None,
            progress=io.StringIO(),
            **FAST,
        )
    assert "gone0" in err.value.message and "HTTP 404" in err.value.message
    assert entry.url in err.value.message
    assert server.requests[Path(entry.url).name] == 1


def test_damaged_cache_file_is_fetched_again(factory: Factory, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rpm = factory.rpm(pkgs("rot", 1)[0])
    lock = lock_of([locked("rot0", rpm, repo="local")])
    repos = {"local": Repo(id="local", baseurl=(rpm.parent.as_uri(),))}
    fetch.fetch_lock(lock, repos=repos, cache=cache, record=None, progress=io.StringIO())
    cached = fetch.rpm_path(cache, lock.packages[0].sha256)
    damaged = bytearray(cached.read_bytes())
    damaged[200] ^= 1
    cached.write_bytes(bytes(damaged))  # same size, different bytes
    again = fetch.fetch_lock(lock, repos=repos, cache=cache, record=None, progress=io.StringIO())
    assert again.downloaded == ("rot0",)
    assert cached.read_bytes() == rpm.read_bytes()


def test_downloads_are_not_fsynced_and_a_cut_short_one_is_fetched_again(
    factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RPM cache checks size and sha256 before every use, so it costs no fsync: a file a
    crash left short (or empty) is fetched again, never handed on."""
    cache = tmp_path / "cache"
    rpm = factory.rpm(pkgs("nosync", 1)[0])
    lock = lock_of([locked("nosync0", rpm, repo="local")])
    repos = {"local": Repo(id="local", baseurl=(rpm.parent.as_uri(),))}
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    first = fetch.fetch_lock(lock, repos=repos, cache=cache, record=None, progress=io.StringIO())
    assert first.downloaded == ("nosync0",) and synced == []
    cached = fetch.rpm_path(cache, lock.packages[0].sha256)
    cached.write_bytes(b"")  # what a crash right after the rename can leave
    again = fetch.fetch_lock(lock, repos=repos, cache=cache, record=None, progress=io.StringIO())
    assert again.downloaded == ("nosync0",)
    assert cached.read_bytes() == rpm.read_bytes()


def test_unknown_repo_is_an_error(factory: Factory, tmp_path: Path) -> None:
    rpm = factory.rpm(pkgs("lost", 1)[0])
    lock = lock_of([locked("lost0", rpm, repo="elsewhere")])
    with pytest.raises(FetchError, match="lost0 comes from repo 'elsewhere'"):
        fetch.fetch_lock(lock, repos=REPOS, cache=tmp_path / "cache", record=None)


# -- signatures --------------------------------------------------------------------------


def signed_repo(key: GpgKey) -> dict[str, Repo]:
    return {"sig": Repo(id="sig", gpgcheck=True, gpgkey=(key.public_key.as_uri(),))}


def test_signed_by_the_repo_key_is_accepted(
    factory: Factory, gpg_key: GpgKey, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    rpm = factory.rpm(pkgs("good", 1)[0], sign_with=gpg_key)
    lock = lock_of([locked("good0", rpm, repo="sig")])
    record = tmp_path / "fetch.json"
    result = fetch.fetch_lock(
        lock, repos=signed_repo(gpg_key), cache=cache, record=record, progress=io.StringIO()
    )
    assert result.downloaded == ("good0",) and result.signatures_checked == 1
    assert jsonio.read(record)["rpms"][0]["gpgcheck"] is True
    keyrings = list((cache / "keyrings").iterdir())
    assert len(keyrings) == 1
    assert (keyrings[0] / "fingerprints").read_text().split() == [gpg_key.fingerprint.lower()]
    # Verified once under this key set: a cache hit does not ask rpmkeys again.
    again = fetch.fetch_lock(
        lock, repos=signed_repo(gpg_key), cache=cache, record=None, progress=io.StringIO()
    )
    assert again.cached == ("good0",) and again.signatures_checked == 0


def test_unsigned_package_is_refused(factory: Factory, gpg_key: GpgKey, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rpm = factory.rpm(pkgs("plain", 1)[0])
    lock = lock_of([locked("plain0", rpm, repo="sig")])
    with pytest.raises(FetchError) as err:
        fetch.fetch_lock(
            lock, repos=signed_repo(gpg_key), cache=cache, record=None, progress=io.StringIO()
        )
    message = err.value.message
    assert "plain0" in message and "is not signed" in message
    assert gpg_key.fingerprint.lower() in message
    assert leftovers(cache) == []


def test_package_signed_by_another_key_is_refused(
    factory: Factory, gpg_key: GpgKey, other_gpg_key: GpgKey, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    rpm = factory.rpm(pkgs("stranger", 1)[0], sign_with=other_gpg_key)
    lock = lock_of([locked("stranger0", rpm, repo="sig")])
    with pytest.raises(FetchError) as err:
        fetch.fetch_lock(
            lock, repos=signed_repo(gpg_key), cache=cache, record=None, progress=io.StringIO()
        )
    message = err.value.message
    assert "stranger0" in message and "not among the repo's keys" in message
    assert gpg_key.fingerprint.lower() in message
    assert other_gpg_key.fingerprint[-16:].lower() in message.lower()  # rpm names the signer
    assert leftovers(cache) == []


def test_cached_without_gpgcheck_is_verified_when_gpgcheck_turns_on(
    factory: Factory, gpg_key: GpgKey, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    plain = factory.rpm(pkgs("later", 1)[0])
    signed = factory.rpm(pkgs("later", 2)[1], sign_with=gpg_key)
    unchecked = {"sig": Repo(id="sig")}
    lock = lock_of([locked("later0", plain, repo="sig"), locked("later1", signed, repo="sig")])
    first = fetch.fetch_lock(
        lock, repos=unchecked, cache=cache, record=None, progress=io.StringIO()
    )
    assert first.signatures_checked == 0 and len(first.downloaded) == 2
    with pytest.raises(FetchError, match=r"later0 .* is not signed"):
        fetch.fetch_lock(
            lock, repos=signed_repo(gpg_key), cache=cache, record=None, progress=io.StringIO()
        )
    # The signed one passed in that run and is remembered as verified for this key set;
    # the unsigned one stays cached but unverified, and is refused again next time.
    marker0, marker1 = (
        fetch.rpm_path(cache, p.sha256).with_suffix(".keysets") for p in lock.packages
    )
    assert marker1.exists() and not marker0.exists()
    only_signed = lock_of([lock.packages[1]])
    result = fetch.fetch_lock(
        only_signed, repos=signed_repo(gpg_key), cache=cache, record=None, progress=io.StringIO()
    )
    assert result.cached == ("later1",) and result.signatures_checked == 0
    with pytest.raises(FetchError, match=r"later0 .* is not signed"):
        fetch.fetch_lock(
            lock, repos=signed_repo(gpg_key), cache=cache, record=None, progress=io.StringIO()
        )
