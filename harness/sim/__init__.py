"""Deterministic simulation (issue 17): a kvnode cluster in one process on
virtual time. `loop` is the event loop, `network` the in-memory transport,
`world` the cluster with its clients, faults and checking, `command` the
`harness sim` command.

Nothing is imported here: `harness.cli` registers `harness sim` from
`command`, and every other command starts without loading the simulation.
"""
