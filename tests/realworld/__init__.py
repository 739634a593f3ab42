"""A real-world corpus for the tests: real Debian amd64 packages as RPMs, and a base.

Test tooling only (never imported by fexstack's runtime code). ``python3 -m
tests.realworld build`` (through ./devroot) builds it by hand; the session fixture
``realworld_corpus`` (tests/realworld/fixture.py) builds it on first use.

- :mod:`tests.realworld.packages`: the package sets (the base's and the corpus's seeds).
- :mod:`tests.realworld.apt`: the closure of the seeds, downloaded with apt from Debian's
  archive under a private configuration (own sources, state, cache, empty dpkg status).
- :mod:`tests.realworld.debcontrol`: Debian versions and relations as RPM EVRs and deps.
- :mod:`tests.realworld.convert`: one .deb to one RPM with rpmbuild (payload untouched).
- :mod:`tests.realworld.base`: the FEX-RootFS-like base tree, EROFS image and base TOML.
- :mod:`tests.realworld.corpus`: the cache entry (key, atomic build, verification).
"""
