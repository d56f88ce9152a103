"""A fault-injecting soak on the local node (issue 16): ``make soak SEED=... DURATION=...``.

``harness.py`` runs the load and the seeded faults against a running node, ``faults.py`` holds the
faults, ``report.py`` the table and the rules; ``python -m bench.soak`` starts the node, runs the
soak, tears everything down and reports. docs/reliability.md has a run's figures.
"""
