"""Running AppImages: inspection, extraction, entrypoints, sanitizing and launching."""
