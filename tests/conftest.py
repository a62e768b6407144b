"""Shared test configuration: hypothesis profiles and common fixtures.

The "ci" profile is repeatable (derandomized, bounded, no deadline) and is the default; set
HYPOTHESIS_PROFILE=dev locally for a slower, randomized search.
"""

import os
import tempfile

from hypothesis import HealthCheck, settings

# Compiled kernels go to a cache of this test session (inherited by subprocesses), never to the
# user's ~/.cache/lstmc.
os.environ.setdefault("LSTMC_CACHE_DIR", tempfile.mkdtemp(prefix="lstmc-test-cache-"))

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
