"""Shared pytest configuration: hypothesis profiles.

`HYPOTHESIS_PROFILE=thorough` runs the property tests with many more examples.
"""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]  # tests of the harness's own pytest plugin

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
