"""Deterministic simulation (issue 17): a kvnode cluster in one process on
virtual time. `loop` is the event loop, `network` the in-memory transport,
`world` the cluster with its clients, faults and checking."""

from .loop import SimLoop, SimulationError, run

__all__ = ["SimLoop", "SimulationError", "run"]
