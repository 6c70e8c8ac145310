"""The `harness` command line.

Only the entry point exists yet: `harness run`, `harness check` and
`harness serve` arrive with the runner, checker and report issues.
"""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamo-harness")
def cli() -> None:
    """A Jepsen-style correctness harness for replicated key-value stores."""


def main() -> None:
    cli()
