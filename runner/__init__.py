"""Running AppImages: inspection, extraction, entrypoints, sanitizing and launching."""

from pathlib import Path

from fexstack import jsonio

jsonio.register_schemas(Path(__file__).resolve().parent / "schemas")
