"""The doit task layer: every task of a fexstack project, declared on top of the packages.

dodo.py only hands its project to this package; the work is in overlays/, invariants/ and
runner/. Nothing here runs at import time.
"""
