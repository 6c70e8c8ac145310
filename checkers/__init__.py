"""checkers: pure functions of a history that say whether it is consistent.

Each checker takes a history and options and returns a result whose `valid`
is True, False or "unknown"; nothing here imports the harness or the node.
"""
