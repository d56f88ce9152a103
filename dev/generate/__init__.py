"""Build tooling: the generated copies in the repository (the chart's CRDs, the reference docs).

Run by `make generate`; unit tests run each with ``--check`` semantics and fail on drift.
"""
