"""Overlay building: stacks, lock, fetch, stage, image and manifest."""
