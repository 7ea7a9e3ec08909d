"""The addresses the reward server counts as loopback (slas.rewards.server.is_loopback)."""

from slas.rewards.server import is_loopback


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.org"]))
