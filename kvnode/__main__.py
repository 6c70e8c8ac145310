"""`python -m kvnode`: the same as the `kvnode` command."""

from .cli import main

main()
