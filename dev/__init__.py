"""Developer tooling: the local stack used by `make demo` and the end-to-end tests."""
