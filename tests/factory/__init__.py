"""Test fixture factory: real RPMs, ELF files, repositories and bases, built from source.

(Being written; see the module docstrings for the API once it lands.)
"""
