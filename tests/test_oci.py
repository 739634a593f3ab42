"""Publishing overlays to and pulling them from a real OCI registry (docker-registry on
127.0.0.1, started here), and runs that use the pulled overlay without building it.

The demo is built once (clone A) and published; other clones pull it: B (the same lock,
its own base built from the same sources) runs it, others are refused for what differs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from fexstack.errors import RegistryError
from overlays import oci, publish, sbom
from tests import test_demo
from tests.registry_support import BINARY, Registry, free_port, running_registry
from tests.test_demo import Doit, copy_project, doit

privileged = test_demo.privileged  # the demo build needs root (mounts, chroot)


def _tree(path: Path) -> list[tuple[str, int]]:
    """Every file under ``path`` (relative name, size): what a refusal must not change."""
    if not path.exists():
        return []
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


# --- the client against the registry (no build) -----------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if shutil.which(BINARY) is None:
        from tests.conftest import in_ci

        message = f"{BINARY} (the distribution registry) is not installed; ./devroot has it"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def test_parse_reference_tags_digests_and_schemes() -> None:
    ref = oci.parse_reference("127.0.0.1:5000/team/demo:v2")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000", "team/demo", "v2", None)
    assert ref.base_url == "http://127.0.0.1:5000"
    digest = "sha256:" + "a" * 64
    pinned = oci.parse_reference(f"localhost:5000/demo@{digest}")
    assert (pinned.tag, pinned.digest, pinned.insecure) == (None, digest, True)
    assert oci.parse_reference("ghcr.io/org/demo").base_url == "https://ghcr.io"
    assert oci.parse_reference("ghcr.io/org/demo").tag == "latest"
    for bad in ("demo:v1", "ghcr.io/org/demo@sha256:abc", "ghcr.io/org/demo@md5:" + "a" * 32):
        with pytest.raises(RegistryError) as err:
            oci.parse_reference(bad)
        assert "HOST[:PORT]/REPOSITORY" in str(err.value.hint)


def test_push_and_fetch_round_trip_is_byte_identical(registry: Registry, tmp_path: Path) -> None:
    payload = tmp_path / "x.erofs"
    payload.write_bytes(bytes(range(256)) * 4099)
    config = tmp_path / "config.json"
    config.write_text('{"format": 1}\n')
    ref = oci.parse_reference(registry.ref("unit/roundtrip"))
    pushed = oci.push(
        ref,
        [oci.Layer(payload, publish.IMAGE)],
        config=config,
        config_media_type=publish.ARTIFACT_TYPE,
        annotations={"dev.fexstack.stack": "unit"},
        chunk_size=64 << 10,  # 17 chunks: the chunked upload's PATCHes and final PUT
    )
    body, digest = oci.fetch_manifest(oci.parse_reference(ref.with_digest(pushed)))
    assert digest == pushed == "sha256:" + hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    assert manifest["config"]["mediaType"] == publish.ARTIFACT_TYPE
    assert manifest["annotations"]["dev.fexstack.stack"] == "unit"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == publish.IMAGE
    out = tmp_path / "out"
    got, size = oci.fetch_blob(ref, layer["digest"], out)
    assert out.read_bytes() == payload.read_bytes()
    assert (got, size) == (layer["digest"], payload.stat().st_size)


def test_fetch_blob_reports_what_the_registry_sent(registry: Registry, tmp_path: Path) -> None:
    payload = tmp_path / "blob"
    payload.write_bytes(b"genuine bytes\n" * 100)
    config = tmp_path / "config.json"
    config.write_text("{}\n")
    ref = oci.parse_reference(registry.ref("unit/tamper"))
    pushed = oci.push(ref, [oci.Layer(payload, publish.LOCK)], config=config,
                      config_media_type=publish.ARTIFACT_TYPE, annotations={})
    body, _ = oci.fetch_manifest(oci.parse_reference(ref.with_digest(pushed)))
    want = json.loads(body)["layers"][0]["digest"]
    registry.blob_file(want).write_bytes(b"tampered bytes\n" * 100)
    got, _ = oci.fetch_blob(ref, want, tmp_path / "out", max_size=1400)
    assert got != want


def test_unreachable_registry_names_the_url_at_once() -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RegistryError) as err:
        oci.fetch_manifest(oci.parse_reference(f"{host}/demo:v1"))
    assert f"http://{host}/v2/demo/manifests/v1" in err.value.message
    assert "refused" in err.value.message.lower()
    assert host in str(err.value.hint)
    assert time.monotonic() - started < 10  # one try, not oras' retries with pauses


def test_missing_tag_is_an_error_naming_it(registry: Registry) -> None:
    with pytest.raises(RegistryError) as err:
        oci.fetch_manifest(oci.parse_reference(registry.ref("unit/none", "nope")))
    assert "/v2/unit/none/manifests/nope" in err.value.message and "404" in err.value.message


# --- the demo: publish on one clone, pull and run on another ---------------------------------


@dataclass(frozen=True)
class Published:
    project: Path  # clone A, where the demo was built
    cache: Path
    ref: str
    digest: str
    first: Doit


@pytest.fixture(scope="module")
def published(
    privileged: None, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Published:
    work = tmp_path_factory.mktemp("publisher")
    project = copy_project(work / "project")
    cache = work / "cache"
    ref = registry.ref("fexstack/demo", "v1")
    result = doit(project, "publish:demo", "--to", ref, cache=cache)
    assert result.returncode == 0, result.output
    lines = [line for line in result.stdout.splitlines() if " is " in line and "@sha256:" in line]
    assert len(lines) == 1, result.output
    digest = lines[0].rsplit("@", 1)[1].strip()
    return Published(project, cache, ref, digest, result)


def clone_of(published: Published, dest: Path, *, base: bool = True) -> Path:
    """A second clone: the publisher's committed files and lock, nothing built but the base
    (copied from the publisher: the same sources give the same base)."""
    project = copy_project(dest)
    shutil.copy2(published.project / "stacks/demo.lock.toml", project / "stacks/demo.lock.toml")
    if base:
        (project / "build/demo").mkdir(parents=True)
        for name in ("base.erofs", "base.packages"):
            shutil.copy2(published.project / "build/demo" / name, project / "build/demo" / name)
    return project


def _pulled_sbom(cache: Path, digest: str) -> dict[str, object]:
    folder = cache / "oci" / "sha256" / digest.removeprefix("sha256:")
    loaded: dict[str, object] = json.loads((folder / "demo.spdx.json").read_text())
    return loaded


def test_publish_pushes_the_layers_and_binding(published: Published) -> None:
    body, digest = oci.fetch_manifest(oci.parse_reference(published.ref))
    assert digest == published.digest
    manifest = json.loads(body)
    types = [layer["mediaType"] for layer in manifest["layers"]]
    assert types == [
        publish.IMAGE, publish.MANIFEST, publish.LOCK, publish.INVARIANTS, sbom.MEDIA_TYPE
    ]
    ann = manifest["annotations"]
    base = published.project / "build/demo/base.erofs"
    assert ann[publish.ANN_BASE] == "sha256:" + hashlib.sha256(base.read_bytes()).hexdigest()
    assert ann[publish.ANN_GPU] == ""  # the demo base has no gpu overlays
    lock = published.project / "stacks/demo.lock.toml"
    assert ann[publish.ANN_LOCK] == "sha256:" + hashlib.sha256(lock.read_bytes()).hexdigest()
    image = published.project / "build/overlays/demo.erofs"
    assert ann[publish.ANN_IMAGE] == "sha256:" + hashlib.sha256(image.read_bytes()).hexdigest()
    # the same overlay published again is the same artifact
    again = doit(published.project, "publish:demo", "--to", published.ref.replace(":v1", ":v1b"),
                 cache=published.cache)
    assert again.returncode == 0, again.output
    assert published.digest in again.stdout


def test_pull_on_a_second_clone_runs_without_building(
    published: Published, tmp_path: Path
) -> None:
    project = clone_of(published, tmp_path / "b")
    cache = tmp_path / "cache"
    pulled = doit(project, "pull:demo", "--from", published.ref, cache=cache)
    assert pulled.returncode == 0, pulled.output
    folder = cache / "oci" / "sha256" / published.digest.removeprefix("sha256:")
    for name in ("demo.erofs", "demo.manifest.json", "demo.lock.toml", "demo.invariants.json"):
        assert (folder / name).read_bytes() == (
            published.project / {"demo.erofs": "build/overlays/demo.erofs",
                                 "demo.manifest.json": "build/overlays/demo.manifest.json",
                                 "demo.lock.toml": "stacks/demo.lock.toml",
                                 "demo.invariants.json": "build/demo/invariants.json"}[name]
        ).read_bytes(), name
    run = doit(project, "run:demo", cache=cache)
    assert run.returncode == 0, run.output
    assert "PASS" in run.stdout
    report = json.loads((run.evidence_dir() / "run.report.json").read_text())
    assert report["outcome"] == "PASS" and report["backend"] == "native"
    assert str(folder / "demo.erofs") in (run.evidence_dir() / "inputs.json").read_text()
    # nothing of the overlay was built: no lock, fetch, stage, check or image step ran
    assert not (project / "build/overlays/demo.erofs").exists()
    assert not (project / "build/demo/staging").exists()
    assert not (cache / "rpms").exists()
    for step in ("lock", "fetch", "stage", "check", "image"):
        assert f"{step}:demo" not in run.output.replace("run:demo", ""), run.output


def test_sbom_validates_against_the_official_schema(published: Published, tmp_path: Path) -> None:
    project = clone_of(published, tmp_path / "b")
    cache = tmp_path / "cache"
    assert doit(project, "pull:demo", "--from", published.ref, cache=cache).returncode == 0
    doc = _pulled_sbom(cache, published.digest)
    schema = json.loads(sbom.SCHEMA.read_text())
    assert schema["title"] == "SPDX 2.3"
    jsonschema.Draft7Validator(schema).validate(doc)
    assert doc["spdxVersion"] == "SPDX-2.3"
    lock = (project / "stacks/demo.lock.toml").read_text()
    packages: list[dict[str, object]] = doc["packages"]  # type: ignore[assignment]
    rpms = {p["name"]: p for p in packages if "purl" in json.dumps(p)}
    assert set(rpms) == {"libdemo-greet", "libdemo-fmt", "demo-data"} or set(rpms) >= {
        "libdemo-greet", "demo-data"}
    for pkg in rpms.values():
        assert pkg["checksums"][0]["algorithm"] == "SHA256"
        assert pkg["checksums"][0]["checksumValue"] in lock
        assert pkg["versionInfo"] and pkg["licenseDeclared"] not in ("", None)
        assert pkg["licenseDeclared"] != "NOASSERTION"
        assert pkg["downloadLocation"] == "NOASSERTION"  # file:// repository
        # a file:// repository's package: its location inside the repository, no path
        assert pkg["sourceInfo"].startswith("from repository demo: ")
        assert "file:" not in pkg["sourceInfo"] and str(published.project) not in pkg["sourceInfo"]
        assert pkg["sourceInfo"].split(": ", 1)[1] in lock
    # a broken document is refused by the same schema
    broken = dict(doc)
    del broken["creationInfo"]
    with pytest.raises(Exception, match="creationInfo"):
        sbom.validate(broken, "test")


def test_pull_refuses_another_base_and_keeps_nothing(published: Published, tmp_path: Path) -> None:
    project = clone_of(published, tmp_path / "c")
    base = project / "build/demo/base.erofs"
    base.write_bytes(base.read_bytes() + b"\0" * 4096)  # another base image
    cache = tmp_path / "cache"
    result = doit(project, "pull:demo", "--from", published.ref, cache=cache)
    assert result.returncode != 0
    assert "checked against base image sha256:" in result.output
    assert hashlib.sha256(base.read_bytes()).hexdigest() in result.output
    assert "doit overlay:demo" in result.output
    assert _tree(cache / "oci") == [] and not (project / "build/pulled").exists()


def test_pull_refuses_another_lock_saying_what_differs(
    published: Published, tmp_path: Path
) -> None:
    project = clone_of(published, tmp_path / "c")
    lock = project / "stacks/demo.lock.toml"
    lock.write_text(lock.read_text() + "# edited by hand\n")  # same packages, other bytes
    cache = tmp_path / "cache"
    result = doit(project, "pull:demo", "--from", published.ref, cache=cache)
    assert result.returncode != 0
    assert "built from another lock than" in result.output
    assert "same packages, other lock inputs" in result.output
    assert "doit overlay:demo" in result.output
    assert "fetching" not in result.output  # refused before the image was downloaded
    assert _tree(cache / "oci") == [] and not (project / "build/pulled").exists()
    # another version of a package: the message names it, with both versions
    original = (published.project / "stacks/demo.lock.toml").read_text()
    lock.write_text(original.replace('version = "1.0"', 'version = "1.1"', 1))
    result = doit(project, "pull:demo", "--from", published.ref, cache=cache)
    assert result.returncode != 0
    assert "demo-data 1.1-1 here, 1.0-1 there" in result.output
    assert _tree(cache / "oci") == [] and not (project / "build/pulled").exists()


def test_pin_refuses_any_other_digest(published: Published, tmp_path: Path) -> None:
    project = clone_of(published, tmp_path / "c")
    stack = project / "stacks/demo.toml"
    other = "sha256:" + "0" * 64
    stack.write_text(stack.read_text() + f'\n[pull]\ndigest = "{other}"\n')
    cache = tmp_path / "cache"
    result = doit(project, "pull:demo", "--from", published.ref, cache=cache)
    assert result.returncode != 0
    assert f"accepts only {other}" in result.output and published.digest in result.output
    assert _tree(cache / "oci") == [] and not (project / "build/pulled").exists()
    # pinned to what was published: the same pull succeeds, by tag and by digest
    stack.write_text(stack.read_text().replace(other, published.digest))
    by_digest = published.ref.rsplit(":", 1)[0] + "@" + published.digest
    for ref in (published.ref, by_digest):
        ok = doit(project, "pull:demo", "--from", ref, cache=cache)
        assert ok.returncode == 0, ok.output


def test_pull_refuses_a_tampered_blob_and_keeps_nothing(
    published: Published, tmp_path: Path
) -> None:
    # a registry of its own: tampering is done in its storage, behind the registry's back
    with running_registry(tmp_path / "registry") as reg:
        ref = reg.ref("fexstack/demo", "v1")
        pushed = doit(published.project, "publish:demo", "--to", ref, cache=published.cache)
        assert pushed.returncode == 0, pushed.output
        body, _ = oci.fetch_manifest(oci.parse_reference(ref))
        layer = next(x for x in json.loads(body)["layers"] if x["mediaType"] == publish.INVARIANTS)
        data = reg.blob_file(layer["digest"])
        data.write_bytes(data.read_bytes().replace(b'"failed": false', b'"failed": true '))
        project = clone_of(published, tmp_path / "c")
        cache = tmp_path / "cache"
        result = doit(project, "pull:demo", "--from", ref, cache=cache)
    assert result.returncode != 0
    assert f"layer {publish.INVARIANTS} should be {layer['digest']}" in result.output
    assert _tree(cache / "oci") == [] and not (project / "build/pulled").exists()


def test_pull_from_a_registry_that_is_down_names_the_url(
    published: Published, tmp_path: Path
) -> None:
    project = clone_of(published, tmp_path / "c")
    host = f"127.0.0.1:{free_port()}"
    cache = tmp_path / "cache"
    result = doit(project, "pull:demo", "--from", f"{host}/fexstack/demo:v1", cache=cache)
    assert result.returncode != 0
    assert f"cannot reach the registry at http://{host}/v2/fexstack/demo/manifests/v1" in (
        result.output)
    assert _tree(cache) == [] and not (project / "build/pulled").exists()


def test_run_builds_locally_once_the_lock_no_longer_matches(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overlays.project import Project
    from overlays.pull import adoptable
    from overlays.stack import load_stack

    project = clone_of(published, tmp_path / "b")
    cache = tmp_path / "cache"
    assert doit(project, "pull:demo", "--from", published.ref, cache=cache).returncode == 0
    monkeypatch.setenv("FEXSTACK_CACHE", str(cache))
    stack = load_stack(project / "stacks", "demo")
    assert adoptable(Project(project), stack) is not None
    adopted = doit(project, "info", "run:demo", cache=cache)
    assert "overlay:demo" not in adopted.output, adopted.output
    lock = project / "stacks/demo.lock.toml"
    lock.write_text(lock.read_text() + "# edited by hand\n")
    assert adoptable(Project(project), stack) is None
    local = doit(project, "info", "run:demo", cache=cache)
    assert "overlay:demo" in local.output, local.output
    lock.write_text(lock.read_text().removesuffix("# edited by hand\n"))
    assert adoptable(Project(project), stack) is not None
    cleaned = doit(project, "clean", "pull:demo", cache=cache)
    assert cleaned.returncode == 0, cleaned.output
    assert not (project / "build/pulled/demo.json").exists()
    assert adoptable(Project(project), stack) is None


def test_a_malformed_pin_is_a_stack_error(tmp_path: Path) -> None:
    from fexstack.errors import ConfigError
    from overlays.stack import load_stack

    project = copy_project(tmp_path / "p")
    stack = project / "stacks/demo.toml"
    stack.write_text(stack.read_text() + '\n[pull]\ndigest = "sha256:abc"\n')
    with pytest.raises(ConfigError) as err:
        load_stack(project / "stacks", "demo")
    assert "pull" in err.value.message and "digest" in err.value.message
    stack.write_text(stack.read_text().replace("sha256:abc", "sha256:" + "a" * 64))
    assert load_stack(project / "stacks", "demo").pull_digest == "sha256:" + "a" * 64


def test_publish_to_a_registry_that_is_down_names_the_url(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    layer = tmp_path / "layer"
    layer.write_bytes(b"x")
    with pytest.raises(RegistryError) as err:
        oci.push(oci.parse_reference(f"{host}/demo:v1"), [oci.Layer(layer, publish.LOCK)],
                 config=layer, config_media_type=publish.ARTIFACT_TYPE, annotations={})
    assert f"cannot reach the registry at http://{host}/v2/demo/" in err.value.message


def test_publish_refuses_a_digest_as_destination(registry: Registry, tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.write_bytes(b"x")
    ref = oci.parse_reference(f"{registry.host}/demo@sha256:" + "a" * 64)
    with pytest.raises(RegistryError, match="publish to a tag"):
        oci.push(ref, [oci.Layer(layer, publish.LOCK)], config=layer,
                 config_media_type=publish.ARTIFACT_TYPE, annotations={})
