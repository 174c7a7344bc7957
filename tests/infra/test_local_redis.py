"""LocalRedis: Debian's redis-server on a free port, a password required, nothing left behind."""

from __future__ import annotations

import socket

import redis as redis_py

from deploy.local.redis import LocalRedis, RedisParams


def test_a_password_is_required_a_restart_keeps_the_port_and_close_leaves_nothing():
    server = LocalRedis()
    try:
        params = server.start()
        assert params.ping() and params.rate_limit_storage == "async+" + params.url
        assert not RedisParams(params.host, params.port).ping()  # no password, no answer
        with socket.create_connection((params.host, params.port), timeout=2) as raw:
            raw.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert raw.recv(100).startswith(b"-NOAUTH")
        with redis_py.Redis.from_url(params.url) as client:
            client.set("kept", "no")
        server.kill()
        assert not params.ping()
        assert server.restart() == params  # same port, same password ...
        with redis_py.Redis.from_url(params.url) as client:
            assert client.get("kept") is None  # ... nothing persisted
        work_dir = server.work_dir
        assert (work_dir / "redis.conf").stat().st_mode & 0o077 == 0  # the password's file
    finally:
        server.close()
    assert not work_dir.exists() and not params.ping()
