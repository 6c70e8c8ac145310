"""Fidelity: each row of DESIGN.md's expected-verdict matrix (as
ci/matrix.toml runs it on real backends) gives the same verdict in
simulation: valid rows valid, must-be-found rows found. The clock rows use
a static per-node skew (the simulation has no clock nemesis yet)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.sim.world import WorldConfig, simulate
from kvnode.config import ClusterSettings

# ci/matrix.toml's [defaults.system]: short timings, so faults show within a short run.
TIMINGS: dict[str, Any] = {"gossip_interval": 0.2, "suspect_after": 1.0, "dead_after": 2.0, "ae_interval": 2.0,
           "handoff_interval": 0.3, "request_timeout": 1.0}

ROWS: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    # name, system settings, world options, the anomaly that must be found (None: valid)
    ("dvv-strict-register-partition-kill", {"quorum": "strict"},
     {"workload": "register", "nemesis": ("partition", "kill")}, None),
    ("dvv-sloppy-cart-partition-kill", {},
     {"workload": "cart", "nemesis": ("partition", "kill")}, None),
    ("lww-cart-clock-loses-adds", {"resolution": "lww"},
     {"workload": "cart", "skew_ns": 2_000_000_000}, "siblings: lost-causal"),
    ("lww-w1-r1-partition-not-linearizable", {"resolution": "lww", "w": 1, "r": 1},
     {"workload": "register", "nemesis": ("partition",), "check": ("linearizable",)},
     "linearizable: nonlinearizable"),
    ("lww-strict-sync-register-partition-kill", {"resolution": "lww", "quorum": "strict", "read_repair": "sync"},
     {"workload": "register", "nemesis": ("partition", "kill"), "check": ("linearizable",)}, None),
    ("lww-strict-clock-not-linearizable", {"resolution": "lww", "quorum": "strict", "read_repair": "sync"},
     {"workload": "register", "skew_ns": 2_000_000_000, "check": ("linearizable",)},
     "linearizable: nonlinearizable"),
]


@pytest.mark.parametrize(("settings", "options", "found"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_matrix_row_gives_its_expected_verdict(settings: dict[str, Any], options: dict[str, Any],
                                               found: str | None) -> None:
    config = WorldConfig(nodes=5, concurrency=10, rate=100.0, simulated_seconds=6.0, recovery=6.0,
                         nemesis_interval=1.0, op_timeout=2.0,
                         settings=ClusterSettings(cluster="sim", **TIMINGS, **settings), **options)
    outcome = simulate(config, seed=1)
    if found is None:
        assert outcome.valid is True, outcome.anomalies()
    else:
        assert outcome.valid is False
        assert found in outcome.anomalies()
