"""Plug-ins of a third-party package, as a user would write them: one file
per plug-in, registered by one line each in the package's entry points
(`harness_test_plugins-0.1.dist-info/entry_points.txt` here; `pyproject.toml`'s
`[project.entry-points."dynamo_harness.workloads"]` in a real package).

- `write_then_read.WriteThenRead`: a workload whose workers write a unique
  value and read the key back, with a claim of its own, `read-your-writes`;
- `freeze.Freeze`: a nemesis that pauses every node at once, then resumes
  them all.
"""
