"""The overlay manifest: content, schema, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fexstack import jsonio
from fexstack.errors import ImageError
from overlays import identity, lockfile, manifest, readback
from overlays.identity import Identity
from overlays.image import ImageInfo, build_image, erofs_utils_version, image_uuid
from overlays.lockfile import Lock, LockedPackage, Reason
from tests.test_image import make_tree

OWNERS = {
    "/usr/lib64/libfoo.so.1.2": "libfoo",
    "/usr/lib64/libfoo.so.1": "libfoo",
    "/usr/lib64/big.bin": "bigdata",
    "/usr/libexec/foo/helper": "foo-tools",
    "/usr/share/doc/foo/README": "foo-doc",
    "/usr/lib64": "filesystem",
}



def bare_content() -> Identity:
    """The identity of an image of no packages (what bare_manifest's images are built from)."""
    return identity.identity((), "lz4hc")


def bare_manifest(image: ImageInfo, name: str = "x") -> manifest.Manifest:
    """The manifest of a deps image with no stack files, lock, base, owners or report."""
    return manifest.make_manifest(
        stack_name=name,
        stack_class="deps",
        stack_files=[],
        lock=None,
        lock_path=None,
        base_image_sha256=None,
        owners={},
        image=image,
        invariants_report=None,
        content=bare_content(),
    )

def make_lock() -> Lock:
    def pkg(name: str, reasons: tuple[Reason, ...], epoch: int = 0) -> LockedPackage:
        return LockedPackage(
            name=name,
            epoch=epoch,
            version="1.0",
            release="1.fc44",
            arch="x86_64",
            repo="fedora",
            url=f"https://example.invalid/{name}.rpm",
            sha256="ab" * 32,
            size=1234,
            reasons=reasons,
        )

    return Lock(
        stack="demo",
        release="44",
        arch="x86_64",
        inputs="sha256:" + "1" * 64,
        base="sha256:" + "2" * 64,
        packages=(
            pkg("libfoo", (Reason(seed="the app links it"),), epoch=2),
            pkg("bigdata", (Reason(required_by="libfoo", capability="bigdata(x86-64)"),)),
            pkg(
                "foo-tools",
                (Reason(seed="helper"), Reason(required_by="libfoo", capability="/usr/libexec/x")),
            ),
        ),
    )


def project(root: Path, *, reverse: bool = False, lock: Lock | None = None) -> dict[str, Any]:
    """A project laid out under ``root``: stack files, lock, staged tree, report, image."""
    stacks = root / "stacks"
    (stacks / "bases").mkdir(parents=True)
    (stacks / "demo.toml").write_text('[stack]\ndescription = "demo"\n')
    (stacks / "bases" / "fedora.toml").write_text('[base]\nimage = "x"\n')
    lock = lock or make_lock()
    lock_path = stacks / "demo.lock.toml"
    lockfile.write(lock_path, lock)
    tree = make_tree(root / "build" / "demo" / "staging", reverse=reverse)
    report = root / "build" / "demo" / "invariants.json"
    report.write_text('{"ok": true}\n')
    content = identity.identity(lock.packages, "lz4hc")
    image = build_image(
        tree, root / "build" / "overlays" / "demo.erofs", uuid_seed=content.digest
    )
    record = manifest.make_manifest(
        stack_name="demo",
        stack_class="deps",
        stack_files=[stacks / "demo.toml", stacks / "bases" / "fedora.toml"],
        lock=lock,
        lock_path=lock_path,
        base_image_sha256="cd" * 32,
        owners=OWNERS,
        image=image,
        invariants_report=report,
        content=content,
    )
    return {"doc": record.to_json(), "record": record, "tree": tree, "image": image,
            "root": root, "lock": lock}


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return project(tmp_path_factory.mktemp("manifest") / "proj")


def by_path(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in doc["files"]}


def test_manifest_content(proj: dict[str, Any]) -> None:
    doc = proj["doc"]
    jsonio.validate(doc, "manifest")
    files = by_path(doc)
    assert files["/usr/lib64/libfoo.so.1.2"]["package"] == "libfoo"
    assert files["/usr/lib64/libfoo.so.1"] == {
        "path": "/usr/lib64/libfoo.so.1",
        "type": "symlink",
        "mode": "0777",
        "size": 13,
        "target": "libfoo.so.1.2",
        "package": "libfoo",
    }
    assert files["/usr/lib64"]["package"] == "filesystem"
    assert files["/etc/foo.conf"]["package"] is None
    assert files["/etc/foo.conf"]["mode"] == "0640"
    assert files["/usr/libexec/foo/suid-helper"]["mode"] == "4755"
    assert files["/usr/share/doc/foo/empty"]["sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert files["/"]["type"] == "dir"
    assert [f["path"] for f in doc["files"]] == sorted(files)
    assert doc["counts"]["files"] == 8  # README.copy counts as its own file
    assert doc["counts"]["unowned"] == 5  # suid-helper, empty, README.copy, conf, dangling

    packages = {p["name"]: p for p in doc["packages"]}
    assert packages["libfoo"]["nevra"] == "libfoo-2:1.0-1.fc44.x86_64"
    assert packages["foo-tools"]["reasons"] == [
        "required by libfoo for /usr/libexec/x",
        "seed: helper",
    ]
    image = proj["image"]
    assert doc["image"]["sha256"] == image.sha256
    assert doc["image"]["file"] == "demo.erofs"
    assert doc["image"]["block_size"] == 4096
    assert doc["image"]["mkfs_flags"] == list(image.mkfs_flags)
    assert doc["image"]["mkfs_env"] == {"SOURCE_DATE_EPOCH": "0"}
    assert doc["base"]["image_sha256"] == "cd" * 32
    assert doc["invariants"]["path"] == "build/demo/invariants.json"
    assert doc["lock"]["path"] == "stacks/demo.lock.toml"
    lock_bytes = (proj["root"] / "stacks/demo.lock.toml").read_bytes()
    assert lock_bytes == lockfile.to_toml(proj["lock"])
    assert [f["path"] for f in doc["stack"]["files"]] == [
        "stacks/bases/fedora.toml",
        "stacks/demo.toml",
    ]
    assert set(doc["tools"]) == {"fexstack", "mkfs.erofs", "fsck.erofs"}
    # the version line of the mkfs.erofs that made the image, and its erofs-utils version
    version = doc["image"]["erofs_utils_version"]
    assert version == erofs_utils_version() and version[:1].isdigit()
    mkfs_line = doc["tools"]["mkfs.erofs"]
    assert mkfs_line.startswith("mkfs.erofs") and version in mkfs_line
    # Nothing host-specific.
    assert str(proj["root"]) not in jsonio.dumps(doc)


def test_write_and_read_back(proj: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "overlays" / "demo.manifest.json"
    manifest.write_manifest(path, proj["record"])
    text = path.read_text()
    assert text == jsonio.dumps(proj["doc"])  # sorted keys, deterministic
    assert manifest.read_manifest(path) == proj["record"]


def test_same_inputs_same_manifest(proj: dict[str, Any], tmp_path: Path) -> None:
    other = project(tmp_path / "elsewhere", reverse=True)
    assert jsonio.dumps(other["doc"]) == jsonio.dumps(proj["doc"])


def test_files_are_a_fresh_listing_of_the_image(proj: dict[str, Any]) -> None:
    image = proj["image"]
    fresh = readback.list_image(image.path)
    assert [e.to_json() for e in fresh.values()] == [
        {k: v for k, v in f.items() if k != "package"} for f in proj["doc"]["files"]
    ]


def test_manifest_describes_the_image_not_a_later_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    image = build_image(tree, tmp_path / "x.erofs", uuid_seed=bare_content().digest)
    (tree / "etc/foo.conf").write_text("changed after\n")
    (tree / "etc/new").write_text("new\n")
    doc = bare_manifest(image, "x")
    files = by_path(doc.to_json())
    assert "/etc/new" not in files
    assert files["/etc/foo.conf"]["size"] == len(b"key = value\n")
    # Without the read-back's entries the image itself is listed, never the tree.
    bare = dataclasses.replace(image, entries={})
    again = bare_manifest(bare, "x")
    assert again == doc


def test_write_validates_the_whole_manifest(proj: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    record: manifest.Manifest = proj["record"]
    manifest.write_manifest(path, record)
    assert manifest.read_manifest(path) == record
    bad = dataclasses.replace(record, image=dataclasses.replace(record.image, block_size=16384))
    with pytest.raises(ImageError, match="image/block_size"):
        manifest.write_manifest(path, bad)
    first = record.files[0]  # the first dir entry
    bad = dataclasses.replace(record, files=(
        dataclasses.replace(first, entry=dataclasses.replace(first.entry, kind="door")),
        *record.files[1:],
    ))
    with pytest.raises(ImageError, match="files/0"):
        manifest.write_manifest(path, bad)
    last = len(record.files) - 1  # not the first entry of its type: checked too
    row = record.files[last]
    bad = dataclasses.replace(record, files=(
        *record.files[:last],
        dataclasses.replace(row, entry=dataclasses.replace(row.entry, size=-1)),
    ))
    with pytest.raises(ImageError, match=f"files/{last}"):
        manifest.write_manifest(path, bad)
    assert manifest.read_manifest(path) == record
    # an unknown key in a file's entry (the document cannot carry it) is refused on read
    doc = json.loads(jsonio.dumps(proj["doc"]))
    doc["files"][0]["generated_at"] = "2026-01-01T00:00:00Z"
    path.write_text(jsonio.dumps(doc))
    with pytest.raises(ImageError, match="files/0"):
        manifest.read_manifest(path)


def test_rejects_malformed_manifests(proj: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    with pytest.raises(ImageError, match="no manifest"):
        manifest.read_manifest(path)
    path.write_text("{not json")
    with pytest.raises(ImageError, match="not valid JSON"):
        manifest.read_manifest(path)
    bad = json.loads(jsonio.dumps(proj["doc"]))
    bad["image"]["block_size"] = 16384
    path.write_text(json.dumps(bad))
    with pytest.raises(ImageError, match="image/block_size"):
        manifest.read_manifest(path)
    bad = json.loads(jsonio.dumps(proj["doc"]))
    bad["files"][1]["generated_at"] = "2026-01-01T00:00:00Z"
    path.write_text(json.dumps(bad))
    with pytest.raises(ImageError, match="files/1"):
        manifest.read_manifest(path)
    bad = json.loads(jsonio.dumps(proj["doc"]))
    del by_path(bad)["/etc/foo.conf"]["sha256"]
    with pytest.raises(jsonschema.ValidationError):
        jsonio.validate(bad, "manifest")


def test_compat_manifest(tmp_path: Path) -> None:
    tree = tmp_path / "compat"
    (tree / "lib64").mkdir(parents=True)
    tree.chmod(0o755)
    (tree / "lib64/ld-linux-x86-64.so.2").symlink_to("/usr/lib64/ld-linux-x86-64.so.2")
    content = identity.identity((), "lz4hc", base="cd" * 32)
    image = build_image(tree, tmp_path / "compat.erofs", uuid_seed=content.digest)
    record = manifest.make_manifest(
        stack_name="compat",
        stack_class="compat",
        stack_files=[],
        lock=None,
        lock_path=None,
        base_image_sha256="cd" * 32,
        owners={},
        image=image,
        invariants_report=None,
        content=content,
    )
    doc = record.to_json()
    assert doc["content"]["base"] == "cd" * 32
    assert doc["lock"] is None and doc["packages"] == [] and doc["invariants"] is None
    assert by_path(doc)["/lib64/ld-linux-x86-64.so.2"]["target"] == (
        "/usr/lib64/ld-linux-x86-64.so.2"
    )
    assert doc["counts"] == {
        "files": 0,
        "dirs": 2,
        "symlinks": 1,
        "other": 0,
        "file_bytes": 0,
        "unowned": 1,
    }


# --- identity: the image derives from its content only (issue 17) ------------------------


def test_content_section_is_the_identity_that_seeded_the_uuid(proj: dict[str, Any]) -> None:
    doc = proj["doc"]
    content = doc["content"]
    lock = proj["lock"]
    assert content == identity.identity(lock.packages, "lz4hc").to_json()
    assert doc["image"]["uuid"] == image_uuid(content["digest"])
    assert f"-U{image_uuid(content['digest'])}" in doc["image"]["mkfs_flags"]
    assert [(p["name"], p["evr"], p["arch"]) for p in content["packages"]] == [
        ("bigdata", "1.0-1.fc44", "x86_64"),
        ("foo-tools", "1.0-1.fc44", "x86_64"),
        ("libfoo", "2:1.0-1.fc44", "x86_64"),
    ]
    assert content["settings"]["compression"] == "lz4hc"
    assert not any(f.startswith("-U") for f in content["settings"]["mkfs_flags"])
    assert set(content["tools"]) == {"fexstack", "erofs-utils"}
    # Where the lock came from (repo id, URL, reasons) is not content.
    text = json.dumps(content)
    assert "example.invalid" not in text and "fedora" not in text and "seed" not in text


def test_identity_ignores_where_and_why_but_not_what() -> None:
    lock = make_lock()
    base = identity.identity(lock.packages, "lz4hc", tool_versions={"fexstack": "1", "e": "1"})

    def digest(packages: Any, compression: str = "lz4hc", tools: Any = None) -> str:
        versions = tools or {"fexstack": "1", "e": "1"}
        return identity.identity(packages, compression, tool_versions=versions).digest

    moved = [
        dataclasses.replace(p, repo="mirror", url=f"file:///elsewhere/{p.name}.rpm", reasons=())
        for p in reversed(lock.packages)
    ]
    assert digest(moved) == base.digest
    first = lock.packages[0]
    for changed in (
        dataclasses.replace(first, sha256="ef" * 32),
        dataclasses.replace(first, release="2.fc44"),
        dataclasses.replace(first, epoch=3),
        dataclasses.replace(first, arch="i686"),
        dataclasses.replace(first, name="libbar"),
    ):
        assert digest([changed, *lock.packages[1:]]) != base.digest, changed
    assert digest(lock.packages[1:]) != base.digest
    assert digest(lock.packages, "lz4") != base.digest
    staged = {"redirected": [], "dropped": []}
    with_install = identity.identity(
        lock.packages, "lz4hc", install=staged, tool_versions={"fexstack": "1", "e": "1"}
    )
    dropped = {"redirected": [], "dropped": [
        {"path": "/usr/bin/foo", "original": "/usr/bin/foo", "package": "libfoo", "type": "file"}
    ]}
    other = identity.identity(
        lock.packages, "lz4hc", install=dropped, tool_versions={"fexstack": "1", "e": "1"}
    )
    assert len({base.digest, with_install.digest, other.digest}) == 3
    compiled = "/usr/share/glib-2.0/schemas/gschemas.compiled"
    cache = {"kind": "gsettings", "cache": compiled, "status": "made", "tool_sha256": "a" * 64,
             "inputs_sha256": "b" * 64, "files": [compiled], "where": "view"}  # fmt: skip
    digests = {
        identity.identity(lock.packages, "lz4hc", install={**staged, "caches": [c]},
                          tool_versions={"fexstack": "1", "e": "1"}).digest
        for c in (cache, {**cache, "tool_sha256": "c" * 64}, {**cache, "where": "host"})
    }
    assert len(digests) == 2 and with_install.digest not in digests  # where it ran: no part
    assert digest(lock.packages, tools={"fexstack": "2", "e": "1"}) != base.digest
    assert digest(lock.packages, tools={"fexstack": "1", "e": "2"}) != base.digest


def test_manifest_refuses_an_image_not_seeded_by_its_content(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    image = build_image(tree, tmp_path / "x.erofs", uuid_seed="sha256:" + "0" * 64)
    with pytest.raises(ImageError, match="not derived from the content record"):
        bare_manifest(image)


def test_stack_files_are_listed_without_digests(proj: dict[str, Any]) -> None:
    """Rule of point 4: a comment edit of a stack file cannot leave a stale digest."""
    files = proj["doc"]["stack"]["files"]
    assert files and all(set(f) == {"path"} for f in files)
    bad = json.loads(jsonio.dumps(proj["doc"]))
    bad["stack"]["files"][0]["sha256"] = "ab" * 32
    with pytest.raises(jsonschema.ValidationError):
        jsonio.validate(bad, "manifest")
    schema = jsonio.read(Path(manifest.__file__).parent / "schemas" / "manifest.schema.json")
    assert "never digests of the stack files" in schema["description"]


def test_every_top_level_key_is_content_or_provenance() -> None:
    schema = jsonio.schema("manifest")
    content, provenance = manifest.sections("content"), manifest.sections("provenance")
    assert not set(content) & set(provenance)
    assert sorted([*content, *provenance]) == sorted(schema["properties"])
    assert {"content", "packages", "files", "image"} <= set(content)
    assert {"stack", "lock", "invariants"} <= set(provenance)
    with pytest.raises(ValueError):
        manifest.sections("other")


def test_content_sections_do_not_depend_on_where_the_lock_came_from(tmp_path: Path) -> None:
    """Another project path and a lock from another mirror: provenance differs, content not."""
    here = project(tmp_path / "here")
    lock = here["lock"]
    mirrored = dataclasses.replace(
        lock,
        inputs="sha256:" + "9" * 64,
        packages=tuple(
            dataclasses.replace(p, url=f"https://mirror.invalid/{p.name}.rpm")
            for p in lock.packages
        ),
    )
    there = project(tmp_path / "there" / "deeper", lock=mirrored)
    for key in manifest.sections("content"):
        assert here["doc"].get(key) == there["doc"].get(key), key
    assert here["doc"]["lock"] != there["doc"]["lock"]


# --- the manifest as a typed record (issue 16) -------------------------------------------


def test_manifest_record_round_trips_every_section(proj: dict[str, Any], tmp_path: Path) -> None:
    """write -> read gives an equal record, and writing that again the same bytes: also the
    optional parts (a base directory's tree digest, install rows and generated caches)."""
    record: manifest.Manifest = proj["record"]
    cache = {"kind": "gsettings", "cache": "/usr/share/glib-2.0/schemas/gschemas.compiled",
             "status": "made", "tool_sha256": "a" * 64, "where": "view"}  # fmt: skip
    fuller = dataclasses.replace(
        record,
        base=manifest.BaseSection(None, "ef" * 32),
        install=manifest.InstallSection(
            redirected=(
                {"original": "/lib64/x", "installed": "/usr/lib64/x", "package": "libfoo"},
            ),
            dropped=(
                {"path": "/usr/bin/foo", "original": "/usr/bin/foo", "package": "foo-tools",
                 "type": "file"},
            ),
            caches=(cache,),
        ),
    )
    empty = dataclasses.replace(fuller, install=manifest.InstallSection((), ()))
    for rec in (record, fuller, empty):
        first, second = tmp_path / "first.json", tmp_path / "second.json"
        manifest.write_manifest(first, rec)
        back = manifest.read_manifest(first)
        assert back == rec
        manifest.write_manifest(second, back)
        assert second.read_bytes() == first.read_bytes()
    doc = jsonio.read(first)  # the on-disk format: no empty caches list, no null tree digest
    assert "caches" not in doc["install"] and "tree_sha256" in doc["base"]
    assert manifest.read_manifest(first).install == manifest.InstallSection((), ())
    assert manifest.read_manifest(first).image.mkfs_flags == tuple(proj["image"].mkfs_flags)


def test_malformed_manifest_error_names_the_file_with_a_hint(
    proj: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "demo.manifest.json"
    bad = json.loads(jsonio.dumps(proj["doc"]))
    del bad["counts"]["unowned"]
    path.write_text(json.dumps(bad))
    with pytest.raises(ImageError) as err:
        manifest.read_manifest(path)
    assert err.value.message.startswith(f"{path}: does not match the manifest schema at counts")
    assert err.value.hint and "doit overlay:" in err.value.hint
    path.write_text("[]")
    with pytest.raises(ImageError, match=r"at \(top\)"):
        manifest.read_manifest(path)
