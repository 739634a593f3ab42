"""The SBOM of a published overlay: SPDX 2.3 JSON, made with spdx-tools.

One SPDX package per locked RPM: its name, version (``[epoch:]version-release``), the
license its RPM header declares, its sha256, where it was downloaded from
(``downloadLocation`` for http/https/ftp URLs) and the repository it came from
(``sourceInfo``: repository id and URL, and a ``purl`` with ``repository_id``), plus one
package for the overlay image itself that CONTAINS them. A license string that is not a
valid SPDX expression (older Fedora packages still carry callaway names) is kept verbatim
as a ``LicenseRef-`` with its text.

The document is byte-deterministic: the same overlay gives the same SBOM (its creation
time is fixed to ``SOURCE_DATE_EPOCH``, 0 when unset, and its namespace derives from the
image's sha256), so publishing the same overlay twice gives the same artifact digest.

It is validated twice before it is written: by spdx-tools' own validator and against
the official SPDX 2.3 JSON schema (``overlays/schemas/spdx-2.3.schema.json``, from the
spdx-spec repository, support/2.3 branch).
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fexstack
from fexstack.errors import ImageError
from overlays.lockfile import Lock, LockedPackage

MEDIA_TYPE = "application/spdx+json"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "spdx-2.3.schema.json"
NAMESPACE = "https://fexstack.invalid/spdx"


def _spdx_id(text: str) -> str:
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _created() -> datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        seconds = int(epoch)
    except ValueError:
        seconds = 0
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _purl(pkg: LockedPackage, release: str) -> str:
    qualifiers = {"arch": pkg.arch, "distro": f"fedora-{release}", "repository_id": pkg.repo}
    if pkg.epoch:
        qualifiers["epoch"] = str(pkg.epoch)
    query = "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in sorted(qualifiers.items()))
    return f"pkg:rpm/fedora/{urllib.parse.quote(pkg.name)}@{pkg.version}-{pkg.release}?{query}"


def _download_location(url: str) -> Any:
    """The package's URL where SPDX allows one (http, https, ftp); else NOASSERTION (a
    file:// repository: the URL is still in sourceInfo)."""
    from spdx_tools.spdx.model import SpdxNoAssertion

    scheme = urllib.parse.urlparse(url).scheme
    return url if scheme in ("http", "https", "ftp") else SpdxNoAssertion()


def _license(text: str | None, refs: dict[str, str]) -> Any:
    """An SPDX license expression for an RPM's License tag (a LicenseRef when invalid)."""
    from license_expression import ExpressionError, get_spdx_licensing
    from spdx_tools.spdx.model import SpdxNoAssertion

    if not text or not text.strip():
        return SpdxNoAssertion()
    licensing = get_spdx_licensing()
    try:
        parsed = licensing.parse(text, validate=True, strict=True)
        if parsed is not None:
            return parsed
    except ExpressionError:
        pass
    ref = "LicenseRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", text.strip()).strip("-")
    refs[ref] = text
    return licensing.parse(ref)


def make_sbom(
    *,
    stack_name: str,
    lock: Lock,
    licenses: Mapping[str, str | None],
    image_name: str,
    image_sha256: str,
) -> dict[str, Any]:
    """The SPDX 2.3 document (as JSON data) of the overlay image and its packages.

    ``licenses`` maps each locked package's sha256 to its RPM License tag.
    """
    from spdx_tools.spdx.jsonschema.document_converter import DocumentConverter
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        ExtractedLicensingInfo,
        Package,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    refs: dict[str, str] = {}
    image_id = _spdx_id(f"overlay-{stack_name}")
    packages = [
        Package(
            spdx_id=image_id,
            name=image_name,
            download_location=SpdxNoAssertion(),
            version=image_sha256[:12],
            files_analyzed=False,
            checksums=[Checksum(ChecksumAlgorithm.SHA256, image_sha256)],
            license_concluded=SpdxNoAssertion(),
            license_declared=SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(),
            comment=f"fexstack deps overlay of stack {stack_name} (EROFS image)",
        )
    ]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    for pkg in sorted(lock.packages, key=lambda p: (p.name, p.arch, p.nevra)):
        pkg_id = _spdx_id(f"rpm-{pkg.nevra}")
        packages.append(
            Package(
                spdx_id=pkg_id,
                name=pkg.name,
                download_location=_download_location(pkg.url),
                version=pkg.evr,
                file_name=Path(urllib.parse.urlparse(pkg.url).path).name or None,
                supplier=SpdxNoAssertion(),
                files_analyzed=False,
                checksums=[Checksum(ChecksumAlgorithm.SHA256, pkg.sha256)],
                source_info=f"from repository {pkg.repo}: {pkg.url}",
                license_concluded=SpdxNoAssertion(),
                license_declared=_license(licenses.get(pkg.sha256), refs),
                copyright_text=SpdxNoAssertion(),
                external_references=[
                    ExternalPackageRef(
                        ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", _purl(pkg, lock.release)
                    )
                ],
            )
        )
        relationships.append(Relationship(image_id, RelationshipType.CONTAINS, pkg_id))
    document = Document(
        CreationInfo(
            spdx_version="SPDX-2.3",
            spdx_id="SPDXRef-DOCUMENT",
            name=f"fexstack overlay {stack_name}",
            document_namespace=f"{NAMESPACE}/{stack_name}-{image_sha256}",
            creators=[Actor(ActorType.TOOL, f"fexstack-{fexstack.__version__}")],
            created=_created(),
        ),
        packages=packages,
        relationships=relationships,
        extracted_licensing_info=[
            ExtractedLicensingInfo(license_id=ref, extracted_text=text, license_name=text)
            for ref, text in sorted(refs.items())
        ],
    )
    problems = validate_full_spdx_document(document)
    if problems:
        raise ImageError(
            f"the SBOM of {stack_name} is not valid SPDX 2.3: "
            + "; ".join(p.validation_message for p in problems[:5]),
            "report this: a locked package has a field spdx-tools refuses",
        )
    doc: dict[str, Any] = DocumentConverter().convert(document)
    # spdx-tools 0.8 writes the enum's Python name (PACKAGE_MANAGER); SPDX 2.3 JSON spells
    # it PACKAGE-MANAGER (the schema's enum): the schema check below catches any other.
    for package in doc.get("packages", []):
        for ref in package.get("externalRefs", []):
            ref["referenceCategory"] = str(ref.get("referenceCategory", "")).replace("_", "-")
    validate(doc, f"the SBOM of {stack_name}")
    return doc


def dumps(doc: Mapping[str, Any]) -> bytes:
    """The SBOM's bytes: sorted keys, two-space indent, a final newline."""
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return loaded


def validate(doc: Any, where: str) -> None:
    """Check ``doc`` against the official SPDX 2.3 JSON schema; :class:`ImageError` if not."""
    import jsonschema  # only where an SBOM is checked: every doit start imports this module

    try:
        jsonschema.Draft7Validator(schema()).validate(doc)
    except jsonschema.ValidationError as exc:
        location = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ImageError(
            f"{where}: does not match the SPDX 2.3 schema at {location}: {exc.message}",
            "publish it again with this version of fexstack",
        ) from exc
