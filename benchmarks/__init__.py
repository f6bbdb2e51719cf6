"""syncflow's benchmark suite: `python -m benchmarks.run --out BENCHMARKS.md` (see BENCHMARKS.md for the method).

Every system runs in its own subprocess (`benchmarks.worker`) against a fresh loopback simulator, so each one's peak
RSS and wall time are its own; the parent (`benchmarks.run`) only orchestrates, verifies and reports.
"""
