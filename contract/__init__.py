"""contract: what the harness, the workloads and a system's adapter agree on.

The vocabulary below every other package of the harness (`harness` uses
`workloads`, both use this; `checkers` stands apart and imports nothing):

- `contract.ops`: the operation records that cross between the runner, a
  workload and a system's client (`Invocation`, `Completion`, `Outcome`), and
  the check that a completion from user code is one;
- `contract.promise`: what a system promises for a workload (`Claim`,
  `Promise`), from which the workload chooses its checkers.
"""

from contract.ops import OUTCOMES, Completion, Invocation, Outcome, completion_problem
from contract.promise import CLAIMS, Claim, Promise

__all__ = ["CLAIMS", "OUTCOMES", "Claim", "Completion", "Invocation", "Outcome", "Promise",
           "completion_problem"]
