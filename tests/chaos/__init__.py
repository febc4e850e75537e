"""The chaos harness of issue 8: faults at the HTTP level, process kills, invariants.

See docs/lifecycle.md ("Chaos") for what it injects, what it checks and how
to replay a run from its seed.
"""
