"""What schema validation of the build's artifacts costs on a scale repository.

Builds the scale stack once in a throwaway project (as build_bench does), then validates
every JSON artifact the build wrote against its schema, the way the build's writers do,
and prints the seconds per artifact kind beside the build's own wall clock:

    ./devroot python3 -m benchmarks.validation_cost --scale medium --workdir /dev/shm/fx-val
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from benchmarks import scale as scaling
from benchmarks.build_bench import STACK, BenchProject
from fexstack import jsonio

# artifact kind -> schema name (the writers' own names)
KINDS = {
    "extracted": "extracted",  # <cache>/extracted/<sha>/meta.json, one per package
    "owners": "owners",
    "stage": "stage",
    "caches": "caches",
    "fetch": "fetch",
    "invariants": "invariants",
    "manifest": "manifest",
}


def artifacts(project: BenchProject) -> dict[str, list[Path]]:
    build = project.root / "build"
    return {
        "extracted": sorted(project.cache.glob("extracted/*/meta.json")),
        "owners": [build / STACK / "owners.json"],
        "stage": [build / STACK / "stage.json"],
        "caches": [build / STACK / "caches.json"],
        "fetch": [build / STACK / "fetch.json"],
        "invariants": [build / STACK / "invariants.json"],
        "manifest": [build / "overlays" / f"{STACK}.manifest.json"],
    }


def _best(rounds: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def measure(project: BenchProject, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Best-of-``rounds`` seconds to validate each kind's documents (reading excluded):
    as the build does (jsonio.validate: the compiled check) and with jsonschema alone."""
    importlib.import_module("overlays")  # registers the schema folders
    importlib.import_module("invariants")
    out: dict[str, dict[str, float]] = {}
    for kind, paths in artifacts(project).items():
        docs = [json.loads(p.read_text()) for p in paths if p.is_file()]
        name = KINDS[kind]
        reference = jsonschema.Draft202012Validator(jsonio.schema(name))

        def built(docs: list[object] = docs, name: str = name) -> None:
            for doc in docs:
                jsonio.validate(doc, name)

        def alone(docs: list[object] = docs, ref: Any = reference) -> None:
            for doc in docs:
                ref.validate(doc)

        out[kind] = {"documents": len(docs), "build": _best(rounds, built),
                     "jsonschema": _best(1, alone)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(scaling.SCALES), default="medium")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fexstack-validation"))
    args = parser.parse_args(argv)
    generated = scaling.generate(scaling.SCALES[args.scale])
    workdir = args.workdir.absolute()
    project = BenchProject(workdir / "project", workdir / "fexstack-cache", generated)
    project.create()
    cold = project.build()
    figures = measure(project)
    total = {how: round(sum(f[how] for f in figures.values()), 3)
             for how in ("build", "jsonschema")}
    result = {"scale": args.scale, "cold_build_seconds": round(cold.seconds, 2),
              "validation_seconds": figures, "validation_total_seconds": total,
              "share_of_cold_build": {k: round(v / cold.seconds, 3) for k, v in total.items()}}
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
