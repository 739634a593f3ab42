"""Throwaway OpenPGP keys for signing fixture RPMs, each in its own GnuPG home.

A key is made once per name and kept under ``<workdir>/keys/<name>/`` (``key.json`` names
its fingerprint), so a cached factory reuses it. Signing runs rpmsign with ``%_gpg_name``,
``%_gpg_path`` and ``%__gpg`` pointing at that home.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fexstack import atomic, command
from testkit.factory.spec import FactoryError, GpgKey

KEY_PARAMS = """\
%no-protection
Key-Type: RSA
Key-Length: 2048
Key-Usage: sign
Name-Real: {name}
Name-Comment: fexstack test key
Name-Email: {name}@fexstack.invalid
Expire-Date: 0
%commit
"""


class Keyring:
    """Makes and remembers signing keys; :meth:`close` stops their gpg-agents."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "keys"
        self._used: set[Path] = set()

    def key(self, name: str) -> GpgKey:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise FactoryError(f"key name {name!r} must be letters, digits, '.', '_' or '-'", None)
        folder = self.root / name
        record = folder / "key.json"
        if not record.exists():
            with atomic.temp_dir(folder) as tmp:
                self._generate(name, tmp)
        data = json.loads(record.read_text())
        homedir = folder / "gnupg"
        self._used.add(homedir)
        return GpgKey(name, homedir, data["fingerprint"], folder / "public.asc")

    def _generate(self, name: str, folder: Path) -> None:
        home = folder / "gnupg"
        home.mkdir(mode=0o700)
        base = ["gpg", "--batch", "--homedir", str(home)]
        command.run(
            [*base, "--gen-key"],
            input=KEY_PARAMS.format(name=name).encode(),
            hint="gpg could not make a throwaway key",
        )
        listing = command.output([*base, "--with-colons", "--list-secret-keys"])
        fingerprints = [ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")]
        if not fingerprints:
            raise FactoryError(f"gpg made no key in {home}", "check gpg --version")
        public = command.run([*base, "--armor", "--export", fingerprints[0]]).stdout
        atomic.write_bytes(folder / "public.asc", public)
        atomic.write_text(
            folder / "key.json", json.dumps({"fingerprint": fingerprints[0], "name": name}) + "\n"
        )
        # The agent was started for the temp home, which is about to be renamed.
        command.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)

    def sign(self, key: GpgKey, rpm: Path) -> None:
        """Add ``key``'s signature to ``rpm`` in place."""
        gpg = shutil.which("gpg") or "/usr/bin/gpg"
        command.run(
            [
                "rpmsign",
                "--addsign",
                "--define", f"_gpg_name {key.fingerprint}",
                "--define", f"_gpg_path {key.homedir}",
                "--define", f"__gpg {gpg}",
                str(rpm),
            ],
            env={"GNUPGHOME": str(key.homedir)},
            hint="rpmsign could not sign with the throwaway key",
        )

    def close(self) -> None:
        """Stop the gpg-agents this keyring started."""
        for home in sorted(self._used):
            command.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        self._used.clear()
