"""Shared test helpers for the core's tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on now, for the rendezvous of multi-process (gloo) tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
