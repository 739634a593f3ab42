"""Loading stacks: ``stacks/<name>.toml``, ``stacks/repos.toml``, ``stacks/bases/<id>.toml``.

The model (the frozen dataclasses) is :mod:`overlays.model`; the messages for bad TOML
are :mod:`overlays.diagnostics`. TOML is parsed once, here, validated against JSON
Schemas (``overlays/schemas``) and turned into frozen dataclasses. Everything downstream
takes these objects, never raw TOML. Relative paths are relative to the file that names
them; ``~`` expands.

Rules a user relies on:

- ``[stack].include`` names other stacks whose ``[seeds]``, ``[exclude]``, waivers,
  ``allow_elf`` and ``keep_executable`` entries merge in, recursively. On a seed name
  clash the including stack's own seed wins, then the includes in the order listed (depth
  first). Only the stack being loaded governs ``[stack]`` class and base, ``[source]``,
  ``[policy].allow_32bit``, ``[image]`` and ``[app]``: those tables of an included stack
  are validated but ignored.
- A stack used only through ``include`` may omit ``[stack].base`` and ``[source]``;
  loading such a stack by itself fails with a message saying what is missing.
  :func:`buildable` lists the stacks that can be built on their own.
- A built stack needs at least one seed after merging, a base and a ``[source]`` release
  (a TOML string: ``release = "44"``).
- ``gpgkey`` entries of ``stacks/repos.toml`` are file:// URLs or paths; they are kept as
  absolute paths (``Repo.gpgkey``), with ``Repo.gpgkey_urls`` giving the file:// form.
- ``[[policy.waiver]].invariant`` is checked here only for its form; the check step
  knows the invariant names and rejects unknown ones.
- Base paths (image, package list, overlays) need not exist when a base is loaded; the
  steps that read them check. The package list may be a glob that must match exactly one
  file (see :func:`overlays.basepkgs.resolve`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fexstack.errors import ConfigError
from invariants.policy import CheckPolicy, ElfAllowance, KeptExecutable, Waiver
from overlays.diagnostics import did_you_mean, key_path, read_toml, show, validate
from overlays.model import (
    BASES_DIR,
    CLASSES,
    COMPRESSIONS,
    DEFAULT_ARCH,
    DEFAULT_LIB_DIRS,
    GPU_MODES,
    INPUTS_FORMAT,
    LOCK_SUFFIX,
    REPOS_FILE,
    SANITIZE_STEPS,
    App,
    Base,
    Repo,
    Stack,
    frozen_mapping,
)

# The model and the policy types are re-exported: load_stack's callers name them from here.
__all__ = [
    "BASES_DIR",
    "CLASSES",
    "COMPRESSIONS",
    "DEFAULT_ARCH",
    "DEFAULT_LIB_DIRS",
    "GPU_MODES",
    "INPUTS_FORMAT",
    "LOCK_SUFFIX",
    "REPOS_FILE",
    "SANITIZE_STEPS",
    "App",
    "Base",
    "CheckPolicy",
    "ElfAllowance",
    "KeptExecutable",
    "Repo",
    "Stack",
    "Waiver",
    "buildable",
    "discover",
    "inputs_digest",
    "key_path",
    "load_base",
    "load_repos",
    "load_stack",
    "resolution_inputs",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _local_path(text: str, folder: Path) -> Path:
    """``text`` as an absolute path: ``~`` expanded, relative to ``folder``, normalised."""
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = folder / path
    return Path(os.path.normpath(path))


# --- repos.toml ------------------------------------------------------------------------


def load_repos(path: Path) -> dict[str, Repo]:
    """The repositories of ``stacks/repos.toml``, by id, not yet expanded."""
    path = Path(path).absolute()
    doc = read_toml(path)
    validate(doc, "repos", path, header_depth=2)
    repos: dict[str, Repo] = {}
    for repo_id, entry in sorted(doc["repos"].items()):
        where = f"{show(path)}: {key_path(['repos', repo_id], 2)}"
        has_base, has_meta = "baseurl" in entry, "metalink" in entry
        if has_base and has_meta:
            raise ConfigError(
                f"{where}: has both baseurl and metalink", "keep exactly one of them"
            )
        if not has_base and not has_meta:
            raise ConfigError(
                f"{where}: has neither baseurl nor metalink",
                'add baseurl = ["https://..."] or metalink = "https://..."',
            )
        gpgcheck = bool(entry.get("gpgcheck", False))
        keys = tuple(_key_file(k, path.parent) for k in entry.get("gpgkey", []))
        if gpgcheck and not keys:
            raise ConfigError(
                f"{where}: gpgcheck = true but no gpgkey is given",
                'add gpgkey = ["file:///etc/pki/rpm-gpg/..."], or set gpgcheck = false',
            )
        repos[repo_id] = Repo(
            id=repo_id,
            baseurl=tuple(_base_url(u, path.parent) for u in entry.get("baseurl", ())),
            metalink=entry.get("metalink"),
            gpgcheck=gpgcheck,
            gpgkey=keys,
            release=entry.get("release"),
            baseurl_written=tuple(entry.get("baseurl", ())),
            gpgkey_written=tuple(entry.get("gpgkey", ())),
        )
    return repos


def _base_url(text: str, folder: Path) -> str:
    """A baseurl as written, or a path (relative to repos.toml, ``~`` expanded) as file://."""
    if "://" in text:
        return text
    # As Path.as_uri() quotes, but keeping "$" so that $releasever and $basearch expand.
    return "file://" + urllib.parse.quote(os.fsencode(_local_path(text, folder)), safe="/$")


def _key_file(text: str, folder: Path) -> str:
    if text.startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        # file:///abs (empty host) and file://localhost/abs are local; nothing else is.
        text = urllib.parse.unquote(parsed.path) if parsed.netloc in ("", "localhost") else text
    return str(_local_path(text, folder))


# --- bases/<id>.toml -------------------------------------------------------------------


def load_base(bases_dir: Path, id: str) -> Base:
    """The base ``<bases_dir>/<id>.toml``. Its files are not required to exist yet."""
    bases_dir = Path(bases_dir).absolute()
    path = bases_dir / f"{id}.toml"
    if not _NAME_RE.match(id) or not path.is_file():
        known = sorted(p.stem for p in bases_dir.glob("*.toml")) if bases_dir.is_dir() else []
        raise ConfigError(
            f"{show(path)}: no such base {id!r}",
            did_you_mean(id, known, "bases here"),
        )
    doc = read_toml(path)
    validate(doc, "base", path)
    entry = doc["base"]
    folder = path.parent
    packages = entry.get("packages")
    return Base(
        id=id,
        path=path,
        image=_local_path(entry["image"], folder),
        packages=_local_path(packages, folder) if packages is not None else None,
        overlays=tuple(_local_path(p, folder) for p in entry.get("overlays", [])),
        lib_dirs=tuple(entry.get("lib_dirs", DEFAULT_LIB_DIRS)),
        host_provides=tuple(entry.get("host_provides", ())),
    )


# --- stacks ----------------------------------------------------------------------------


def discover(stacks_dir: Path) -> list[str]:
    """Names of the stacks in ``stacks_dir`` (``*.toml`` but repos.toml and locks), sorted."""
    return sorted(
        p.name[: -len(".toml")]
        for p in Path(stacks_dir).glob("*.toml")
        if p.name != REPOS_FILE and not p.name.endswith(LOCK_SUFFIX) and p.is_file()
    )


def buildable(stacks_dir: Path) -> list[str]:
    """The stacks that can be built by themselves (they name a base and a ``[source]``).

    Stacks used only through ``include`` are left out. A file that is not valid TOML
    counts as buildable, so that loading it reports the error.
    """
    names = []
    for name in discover(stacks_dir):
        try:
            doc = read_toml(Path(stacks_dir) / f"{name}.toml")
        except ConfigError:
            names.append(name)
            continue
        stack = doc.get("stack")
        if "source" in doc or (isinstance(stack, dict) and "base" in stack):
            names.append(name)
    return names


@dataclass
class _Merged:
    """What a stack and its includes contribute: seeds, excludes, waivers, allowances."""

    seeds: dict[str, str] = field(default_factory=dict)
    exclude: set[str] = field(default_factory=set)
    waivers: list[Waiver] = field(default_factory=list)
    allow_elf: list[ElfAllowance] = field(default_factory=list)
    keep: list[KeptExecutable] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    included: list[str] = field(default_factory=list)

    def absorb(self, other: _Merged) -> None:
        for name, reason in other.seeds.items():
            self.seeds.setdefault(name, reason)
        self.exclude |= other.exclude
        self.waivers += [w for w in other.waivers if w not in self.waivers]
        self.allow_elf += [a for a in other.allow_elf if a not in self.allow_elf]
        self.keep += [k for k in other.keep if k not in self.keep]
        self.files += [f for f in other.files if f not in self.files]
        self.included += [n for n in other.included if n not in self.included]


class _Loader:
    """Loads one stack and its includes, parsing each file once."""

    def __init__(self, stacks_dir: Path) -> None:
        self.dir = Path(stacks_dir).absolute()
        self.docs: dict[str, dict[str, Any]] = {}
        self.merged: dict[str, _Merged] = {}

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.toml"

    def doc(self, name: str) -> dict[str, Any]:
        if name not in self.docs:
            path = self.path(name)
            doc = read_toml(path)
            validate(doc, "stack", path)
            _check_waivers(doc, path)
            self.docs[name] = doc
        return self.docs[name]

    def merge(self, name: str, chain: tuple[str, ...]) -> _Merged:
        """``name``'s own entries, then its includes' (depth first, in order)."""
        if name in self.merged:
            return self.merged[name]
        doc = self.doc(name)
        path = self.path(name)
        merged = _Merged(files=[path])
        merged.seeds.update(doc.get("seeds", {}))
        merged.exclude.update(doc.get("exclude", {}).get("packages", []))
        policy = doc.get("policy", {})
        merged.waivers += [
            Waiver(
                invariant=w["invariant"],
                reason=w["reason"],
                path=w.get("path"),
                package=w.get("package"),
            )
            for w in policy.get("waiver", [])
        ]
        merged.allow_elf += [
            ElfAllowance(path=a["path"], reason=a["reason"]) for a in policy.get("allow_elf", [])
        ]
        merged.keep += [
            KeptExecutable(path=k["path"], reason=k["reason"])
            for k in policy.get("keep_executable", [])
        ]
        for index, child in enumerate(doc.get("stack", {}).get("include", [])):
            where = f"{show(path)}: {key_path(['stack', 'include', index])}"
            if child in (*chain, name):
                loop = chain[chain.index(child) :] if child in chain else ()
                cycle = " -> ".join([*loop, name, child])
                raise ConfigError(
                    f"{where}: include cycle: {cycle}",
                    "remove one of these includes; a stack cannot include itself, "
                    "directly or through others",
                )
            if child == REPOS_FILE[: -len(".toml")] or not self.path(child).is_file():
                raise ConfigError(
                    f"{where}: no stack {child!r} ({show(self.path(child))} does not exist)",
                    did_you_mean(child, [n for n in discover(self.dir) if n != name], "stacks"),
                )
            sub = self.merge(child, (*chain, name))
            if child not in merged.included:
                merged.included.append(child)
            merged.absorb(sub)
        self.merged[name] = merged
        return merged


def _check_waivers(doc: dict[str, Any], path: Path) -> None:
    for index, waiver in enumerate(doc.get("policy", {}).get("waiver", [])):
        if "path" not in waiver and "package" not in waiver:
            raise ConfigError(
                f"{show(path)}: {key_path(['policy', 'waiver', index])}: "
                "needs a path glob or a package (or both) to say what it waives",
                'add path = "/usr/lib64/..." or package = "name"',
            )


def load_stack(stacks_dir: Path, name: str) -> Stack:
    """Load ``<stacks_dir>/<name>.toml`` with its includes, repos and base.

    Reads ``repos.toml`` and ``bases/<base>.toml`` from ``stacks_dir``. Every problem is
    a :class:`ConfigError` naming the file and the key path.
    """
    loader = _Loader(stacks_dir)
    path = loader.path(name)
    if not _NAME_RE.match(name) or name == "repos" or not path.is_file():
        raise ConfigError(
            f"{show(path)}: no stack {name!r}",
            did_you_mean(name, discover(loader.dir), "stacks"),
        )
    doc = loader.doc(name)
    shown = show(path)
    head = doc.get("stack", {})
    if "base" not in head:
        raise ConfigError(
            f"{shown}: [stack].base: missing: a stack that is built needs a base "
            "(without one it can only be used through another stack's include)",
            'add base = "<id>" naming stacks/bases/<id>.toml under [stack]',

        )
    if "source" not in doc:
        raise ConfigError(
            f"{shown}: [source]: missing: a stack that is built needs a release and repos "
            "(without them it can only be used through another stack's include)",
            'add [source] with release = "44" and repos = ["fedora", "updates"]',
        )
    merged = loader.merge(name, ())
    if not merged.seeds:
        via = f" (nor from its includes: {', '.join(merged.included)})" if merged.included else ""
        raise ConfigError(
            f"{shown}: [seeds]: no seeds{via}",
            'add at least one package under [seeds]: name = "why it is needed"',
        )
    excluded_seeds = sorted(s for s in merged.seeds if s in merged.exclude)
    if excluded_seeds:
        raise ConfigError(
            f"{shown}: [exclude].packages: excludes seed(s) {', '.join(excluded_seeds)}",
            "drop them from [seeds] (or the included stack) or from [exclude]",
        )

    source = doc["source"]
    repos_path = loader.dir / REPOS_FILE
    if not repos_path.is_file():
        raise ConfigError(
            f"{show(repos_path)}: no such file (stacks name their repos there)",
            "create it with [repos.<id>] tables",
        )
    known = load_repos(repos_path)
    release, arch = source["release"], source.get("arch", DEFAULT_ARCH)
    repos = []
    for index, repo_id in enumerate(source["repos"]):
        if repo_id not in known:
            raise ConfigError(
                f"{shown}: {key_path(['source', 'repos', index])}: "
                f"no repo {repo_id!r} in {show(repos_path)}",
                did_you_mean(repo_id, known, "repos"),
            )
        repos.append(known[repo_id].expand(release, arch))

    base_id = head["base"]
    bases_dir = loader.dir / BASES_DIR
    if not (bases_dir / f"{base_id}.toml").is_file():
        known_bases = sorted(p.stem for p in bases_dir.glob("*.toml")) if bases_dir.is_dir() else []
        raise ConfigError(
            f"{shown}: [stack].base: no base {base_id!r} "
            f"({show(bases_dir / (base_id + '.toml'))} does not exist)",
            did_you_mean(base_id, known_bases, "bases"),
        )
    base = load_base(bases_dir, base_id)

    return Stack(
        name=name,
        path=path,
        description=head.get("description", ""),
        klass=head.get("class", "deps"),
        base=base,
        includes=tuple(head.get("include", [])),
        release=release,
        arch=arch,
        repos=tuple(repos),
        seeds=frozen_mapping(merged.seeds),
        exclude=tuple(sorted(merged.exclude)),
        waivers=tuple(merged.waivers),
        allow_elf=tuple(merged.allow_elf),
        allow_32bit=bool(doc.get("policy", {}).get("allow_32bit", False)),
        weak_deps=bool(source.get("weak_deps", False)),
        compression=doc.get("image", {}).get("compression", "lz4hc"),
        app=_app(doc["app"], path.parent) if "app" in doc else None,
        files=(*merged.files, repos_path, base.path),
        included=tuple(merged.included),
        pull_digest=doc.get("pull", {}).get("digest"),
        keep_executables=tuple(merged.keep),
    )


def _app(entry: dict[str, Any], folder: Path) -> App:
    return App(
        appimage=_local_path(entry["appimage"], folder),
        gpu_mode=entry.get("gpu_mode", "drm"),
        env=frozen_mapping(entry.get("env", {})),
        args=tuple(entry.get("args", ())),
        timeout_seconds=entry.get("timeout_seconds"),
        sanitize=tuple(entry.get("sanitize", ())),
        plugin_dirs=tuple(_local_path(p, folder) for p in entry.get("plugin_dirs", ())),
        allow_execstack=bool(entry.get("allow_execstack", False)),
        privileged=bool(entry.get("privileged", False)),
        run_as=(entry["run_as"][0], entry["run_as"][1]) if "run_as" in entry else None,
    )


# --- what resolution depends on --------------------------------------------------------


def resolution_inputs(stack: Stack, base_packages: str | None = None) -> dict[str, Any]:
    """Everything that influences how ``stack`` resolves, as a JSON-able dict.

    Descriptions, comments, ``[app]``, ``[image]`` and waivers are left out, so editing
    them does not invalidate a lock. Repository baseurls and keys are recorded as written
    in repos.toml (a relative path stays relative), so the same project at another path
    has the same inputs. Seed reasons are in (the lock records them).
    ``base_packages`` is the digest of the base's package list
    (:func:`overlays.basepkgs.digest`); the caller supplies it, since reading the list
    is the lock step's job.
    """
    return {
        "format": INPUTS_FORMAT,
        "class": stack.klass,
        "release": stack.release,
        "arch": stack.arch,
        "repos": [
            {
                "id": r.id,
                "baseurl": list(r.baseurl_written or r.baseurl),
                "metalink": r.metalink,
                "gpgcheck": r.gpgcheck,
                "gpgkey": list(r.gpgkey_written or r.gpgkey),
                **({"release": r.release} if r.release != stack.release else {}),
            }
            for r in stack.repos
        ],
        "seeds": dict(stack.seeds),
        "exclude": list(stack.exclude),
        "weak_deps": stack.weak_deps,
        "allow_32bit": stack.allow_32bit,
        "base_packages": base_packages,
    }


def inputs_digest(inputs: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of ``inputs`` in canonical JSON (sorted keys)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
