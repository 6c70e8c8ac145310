"""harness: runs a cluster of a system under test, drives concurrent clients at
it, injects faults, records the history and hands it to the checkers.

The runner, backends and nemeses land in later issues; the command-line entry
point (`harness`) already exists so that its interface can grow in place.
"""
