"""Overlay building: stacks, lock, fetch, stage, image and manifest."""

from pathlib import Path

from fexstack import jsonio

jsonio.register_schemas(Path(__file__).resolve().parent / "schemas")
