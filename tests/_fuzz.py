"""Hypothesis bounds shared by the fuzz tests (integration/test_fuzz.py, integration/test_loader_fuzz.py)."""

import os
import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, settings

N = int(os.environ.get("SLAS_FUZZ_EXAMPLES", "0"))


def bounded(examples: int, deadline_ms: int | None):
    """Small and derandomized by default (CI); SLAS_FUZZ_EXAMPLES=N: N random examples."""
    return settings(max_examples=N or examples, deadline=deadline_ms, derandomize=not N, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


@contextmanager
def no_hang(seconds: int):
    """A hard limit (SIGALRM): hypothesis's deadline only judges an example after it returns, so a call that hangs
    (a server that never answers, a loader stuck on a damaged file) fails the test instead of stalling it."""
    def fire(signum, frame):
        raise TimeoutError(f"no outcome within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
