"""pytest fixtures of the fixture factory (filled in by the factory module)."""
