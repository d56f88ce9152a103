"""Tests of dev/ outside the stack library (the local kubelet); collected by `make test`."""
