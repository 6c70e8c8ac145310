"""Tests of `harness`: history readers and writers, the command line."""
