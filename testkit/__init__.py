"""Test tooling, kept out of the runtime packages: the fixture RPM factory, the AppImage
packer and the embedded demo's generation (which the demo tasks use)."""
