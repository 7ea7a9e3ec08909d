"""The `remote` reward's client without a server (slas.rewards.remote): option errors, and the backoff between retries."""

import random

import pytest

from slas import rewards
from slas.rewards.remote import backoff_delay


def test_remote_option_errors():
    with pytest.raises(ValueError, match="url must start with http://"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": "localhost:1"}})
    with pytest.raises(ValueError, match="encoding must be 'png' or 'raw'"):
        rewards.build({"remote": 1.0}, options={"remote": {"url": "http://127.0.0.1:1", "encoding": "jpeg"}})
    with pytest.raises(ValueError, match=r"reward 'remote' needs option\(s\) \['url'\]"):
        rewards.build({"remote": 1.0})


def test_backoff_is_exponential_with_jitter_and_honours_retry_after():
    rng = random.Random(0)
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (200, 8.0)]:
        waits = [backoff_delay(attempt, 1.0, 8.0, rng=rng) for _ in range(200)]
        assert cap / 2 <= min(waits) and max(waits) <= cap and max(waits) - min(waits) > cap / 4  # spread: jitter
    assert backoff_delay(1, 0.1, 8.0, retry_after=3, rng=rng) == 3  # the server's Retry-After is a floor ...
    assert backoff_delay(1, 0.1, 8.0, retry_after=100, rng=rng) == 8  # ... capped at backoff_max
    assert backoff_delay(3, 0.0, 8.0, rng=rng) == 0
