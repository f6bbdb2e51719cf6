"""Helpers shared by the reliability tests (fault-injecting transports, checkpoint-safety checks, crash harness)."""
