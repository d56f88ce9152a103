"""Tests of the local-stack library (dev/stack); collected by `make test` and `make test-unit`."""
