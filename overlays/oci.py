"""The OCI registry client of ``doit publish:`` and ``doit pull:``, on oras-py.

oras-py speaks the distribution API (uploads, manifests, blobs, token auth from
``~/.docker/config.json``); this module adds what fexstack needs around it:

- references ``host[:port]/repository[:tag|@sha256:...]``; a loopback host
  (``localhost``, ``127.0.0.0/8``, ``::1``) is spoken to over plain http, every other
  host over https;
- one try per request: oras retries a failed connection five times with growing
  pauses (more than two minutes); an unreachable registry is reported at once, naming
  the URL, as a :class:`RegistryError`;
- the manifest's own bytes (its digest is the sha256 of those bytes, not of a
  re-serialisation) and blobs streamed to a file while their sha256 is taken.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fexstack.errors import RegistryError

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Reference:
    """A parsed ``host/repository[:tag][@digest]``."""

    text: str
    registry: str
    repository: str  # namespace/repository
    tag: str | None
    digest: str | None

    @property
    def insecure(self) -> bool:
        """Plain http: only for a registry on this machine's loopback interface."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else (
            self.registry[1:].split("]", 1)[0]
        )
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def base_url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://{self.registry}"

    def with_digest(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"


def parse_reference(text: str) -> Reference:
    """Parse ``text``; a :class:`RegistryError` names what a reference needs."""
    import oras.container

    hint = "write it as HOST[:PORT]/REPOSITORY[:TAG] or HOST[:PORT]/REPOSITORY@sha256:<64 hex>"
    if "/" not in text:
        raise RegistryError(f"{text!r} is not a registry reference (no registry host)", hint)
    try:
        parsed = oras.container.Container(text)
    except ValueError as exc:
        raise RegistryError(f"{text!r} is not a registry reference: {exc}", hint) from exc
    host = text.split("/", 1)[0]
    if parsed.registry != host:
        raise RegistryError(f"{text!r}: {host!r} is not a registry host", hint)
    digest = parsed.digest
    if digest is not None and not _is_sha256(digest):
        raise RegistryError(f"{text!r}: {digest!r} is not a sha256 digest", hint)
    named = text.split("/", 1)[1].split("@", 1)[0].rsplit("/", 1)[-1]
    tag = named.split(":", 1)[1] if ":" in named else (None if digest else "latest")
    return Reference(text, parsed.registry, parsed.api_prefix, tag, digest)


def _is_sha256(digest: str) -> bool:
    algo, _, hexpart = digest.partition(":")
    return algo == "sha256" and len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def _client(ref: Reference) -> Any:
    """An oras ``Registry`` for ``ref`` whose requests are tried once."""
    import oras.provider
    import requests

    unretried = oras.provider.Registry.do_request.__wrapped__

    class OneTry(oras.provider.Registry):  # type: ignore[misc]
        def do_request(
            self,
            url: str,
            method: str = "GET",
            data: Any = None,
            headers: dict[str, str] | None = None,
            json: dict[str, Any] | None = None,
            stream: bool = False,
        ) -> requests.Response:
            try:
                response: requests.Response = unretried(
                    self, url, method, data, headers, json, stream
                )
                return response
            except requests.exceptions.ConnectionError as exc:
                raise RegistryError(
                    f"cannot reach the registry at {url}: {_reason(exc)}",
                    f"check that the registry {ref.base_url} is up and reachable, "
                    "or pull from another one",
                ) from exc

    return OneTry(hostname=ref.registry, insecure=ref.insecure)


def _reason(exc: BaseException) -> str:
    """The socket error under a requests ``ConnectionError`` (e.g. "Connection refused")."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        inner = todo.pop()
        if id(inner) in seen:
            continue
        seen.add(id(inner))
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        todo += [a for a in inner.args if isinstance(a, BaseException)]
        todo += [e for e in (inner.__cause__, inner.__context__) if e is not None]
        reason = getattr(inner, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    return str(exc) or type(exc).__name__


def _failed(what: str, url: str, response: Any) -> RegistryError:
    detail = ""
    try:
        errors = response.json().get("errors", [])
        detail = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        detail = ""
    return RegistryError(
        f"{what} {url}: HTTP {response.status_code} {response.reason}"
        + (f" ({detail})" if detail else ""),
        "check the reference (repository, tag or digest) and your access to the registry",
    )


@dataclass(frozen=True)
class Layer:
    """One file to push: its path, media type and title."""

    path: Path
    media_type: str


def push(
    ref: Reference,
    layers: Sequence[Layer],
    *,
    config: Path,
    config_media_type: str,
    annotations: Mapping[str, str],
    chunk_size: int = 16 << 20,
) -> str:
    """Push ``layers`` as one artifact tagged ``ref``; the manifest's digest.

    Blobs go up in chunks of ``chunk_size`` bytes (oras' monolithic upload would read a
    whole image into memory).
    """
    import oras.provider

    if ref.digest is not None:
        raise RegistryError(
            f"{ref.text}: publish to a tag, not a digest",
            "the registry names what was pushed by its digest; give HOST/REPOSITORY:TAG",
        )
    client = _client(ref)
    target = f"{ref.registry}/{ref.repository}:{ref.tag}"
    try:
        response = client.push(
            target,
            files=[f"{layer.path}:{layer.media_type}" for layer in layers],
            manifest_config=f"{config}:{config_media_type}",
            manifest_annotations=dict(annotations),
            disable_path_validation=True,
            do_chunked=True,
            chunk_size=chunk_size,
            quiet=True,
        )
    except ValueError as exc:  # oras reports refused uploads as ValueError
        raise RegistryError(
            f"the registry {ref.base_url} refused the push to {target}: {exc}",
            "check your access to the repository (docker login / ~/.docker/config.json)",
        ) from exc
    if not isinstance(response, oras.provider.requests.Response) or response.status_code != 201:
        raise _failed("pushing the manifest to", target, response)
    digest = response.headers.get("Docker-Content-Digest", "")
    if not _is_sha256(digest):
        raise RegistryError(
            f"{ref.base_url} accepted {target} but did not say its digest",
            "pull it by tag and pin the digest it reports",
        )
    return str(digest)


def fetch_manifest(ref: Reference) -> tuple[bytes, str]:
    """The manifest ``ref`` names, as the registry sent it, and its sha256 digest."""
    client = _client(ref)
    url = f"{ref.base_url}/v2/{ref.repository}/manifests/{ref.digest or ref.tag}"
    response = client.do_request(url, "GET", headers={"Accept": MANIFEST_MEDIA_TYPE})
    if response.status_code != 200:
        raise _failed("fetching the manifest", url, response)
    body = bytes(response.content)
    return body, "sha256:" + hashlib.sha256(body).hexdigest()


def parse_manifest(body: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"{where}: the manifest is not JSON: {exc}") from exc
    media_type = doc.get("mediaType", MANIFEST_MEDIA_TYPE) if isinstance(doc, dict) else None
    if media_type != MANIFEST_MEDIA_TYPE:
        raise RegistryError(
            f"{where}: not an OCI image manifest",
            "publish the overlay with doit publish:<stack> --to REF",
        )
    manifest: dict[str, Any] = doc
    return manifest


def fetch_blob(
    ref: Reference, digest: str, dest: Path, *, max_size: int | None = None
) -> tuple[str, int]:
    """Stream the blob ``digest`` into ``dest``; its actual sha256 digest and size.

    A blob growing past ``max_size`` (what its descriptor says) is cut off there: its
    digest then differs and the caller refuses it.
    """
    if not _is_sha256(digest):
        raise RegistryError(f"{ref.text}: {digest!r} is not a sha256 digest")
    client = _client(ref)
    url = f"{ref.base_url}/v2/{ref.repository}/blobs/{digest}"
    response = client.do_request(url, "GET", stream=True)
    with response:
        if response.status_code != 200:
            raise _failed("fetching the blob", url, response)
        sha = hashlib.sha256()
        size = 0
        with open(dest, "wb") as out:
            for chunk in response.iter_content(chunk_size=_CHUNK):
                out.write(chunk)
                sha.update(chunk)
                size += len(chunk)
                if max_size is not None and size > max_size:
                    break
    return "sha256:" + sha.hexdigest(), size
