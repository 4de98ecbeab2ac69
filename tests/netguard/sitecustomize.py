"""Loaded by the server subprocesses of the FunASR tests (PYTHONPATH): every attempt to resolve or
connect to a host other than loopback is appended to $HARK_NET_LOG, so a test can assert there was none."""

import os
import socket

_LOG = os.environ.get("HARK_NET_LOG")
_LOCAL = {"", "localhost", "::1", "0.0.0.0", "::"}


def _record(what: str, host: object, detail: object) -> None:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or str(host) in _LOCAL or str(host).startswith("127."):
        return
    with open(_LOG, "a") as fh:  # type: ignore[arg-type]
        fh.write(f"pid {os.getpid()} {what} {detail!r}\n")


if _LOG:
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            _record("connect", address[0], address)
        return _connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            _record("connect_ex", address[0], address)
        return _connect_ex(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        _record("getaddrinfo", host, host)
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
