"""A small fault-injecting TCP/HTTP proxy for tests: put it in front of a real registry and make
it refuse, hang, stall after N bytes, throttle to B bytes/s, or answer an HTTP status K times;
several proxies may share one bandwidth (a token bucket for all their connections), and each
counts the registry requests it forwarded. Listens on 127.0.0.1 only; upstream is loopback."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

_REQUEST = re.compile(rb"\b(GET|HEAD) /v2/\S*?/(manifests|blobs)/")


class SharedBandwidth:
    """One total rate for every connection of every proxy given it: each chunk waits for its
    turn on one timeline, so N transfers get about rate/N each, as on a saturated mirror link."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, size: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + size / self.bytes_per_s
        if start > now:
            time.sleep(start - now)


@dataclass
class Fault:
    mode: str = "pass"  # pass | hang | stall | throttle | status
    stall_after_bytes: int = 0
    bytes_per_s: float = 0.0
    status: int = 503
    status_times: int = 0  # how many requests get `status` before passing through
    match: bytes = b""  # only requests whose first line contains this get `status`
    pass_first: int = 0  # let this many matching requests through before answering `status`

    @property
    def body(self) -> bytes:
        """The registry-API error body a real registry sends with this status."""
        code, message = {
            401: ("UNAUTHORIZED", "authentication required"),
            404: ("MANIFEST_UNKNOWN", "manifest unknown"),
            429: ("TOOMANYREQUESTS", "You have reached your pull rate limit (test proxy)"),
        }.get(self.status, ("UNAVAILABLE", "service unavailable (test proxy)"))
        return ('{"errors":[{"code":"%s","message":"%s"}]}' % (code, message)).encode()


@dataclass
class FaultProxy:
    upstream_port: int
    fault: Fault = field(default_factory=Fault)
    port: int = 0
    requests_seen: int = 0
    statuses_sent: int = 0
    matched: int = 0
    downstream_bytes: int = 0
    stalled_at: float | None = None  # when a stall began (time.monotonic())
    shared: SharedBandwidth | None = None  # a total rate shared with other connections and proxies
    requests: dict = field(default_factory=lambda: {"manifests": 0, "blobs": 0})  # GET/HEAD forwarded, by kind

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        for sock in [self._server, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        fault = self.fault
        if fault.mode == "hang":
            self._stop.wait()  # accept and never answer
            return
        head = b""
        if fault.mode == "status":
            head = self._read_head(client)
            if not head[:1].isalpha():  # not HTTP (the daemon tries TLS first): pass it through
                fault = Fault()
        if fault.mode == "status":
            with self._lock:
                self.requests_seen += 1
                matches = fault.match in head.split(b"\r\n", 1)[0]
                self.matched += matches
                inject = matches and self.matched > fault.pass_first and self.statuses_sent < fault.status_times
                if inject:
                    self.statuses_sent += 1
            if inject:
                reason = {401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 503: "Service Unavailable"}.get(fault.status, "Error")
                self._send_quietly(client,
                    f"HTTP/1.1 {fault.status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(fault.body)}\r\nConnection: close\r\n\r\n".encode() + fault.body
                )
                client.close()
                return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        if head:
            upstream.sendall(self._one_request_per_connection(head))
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)

    @staticmethod
    def _one_request_per_connection(head: bytes) -> bytes:
        """Ask upstream to close after this response, so the next request comes on a new
        connection and is seen (and maybe answered) by the proxy too."""
        top, sep, rest = head.partition(b"\r\n\r\n")
        lines = [line for line in top.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        return b"\r\n".join(lines + [b"Connection: close"]) + sep + rest

    @staticmethod
    def _send_quietly(sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass

    @staticmethod
    def _read_head(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if not data[:1].isalpha():
                break
        return data

    def _pipe(self, source: socket.socket, target: socket.socket, downstream: bool) -> None:
        fault = self.fault
        try:
            while not self._stop.is_set():
                data = source.recv(16384 if not (downstream and fault.mode == "throttle") else 4096)
                if not data:
                    break
                if not downstream:
                    for match in _REQUEST.finditer(data):
                        with self._lock:
                            self.requests[match.group(2).decode()] += 1
                if downstream and self.shared is not None:
                    self.shared.take(len(data))
                if downstream and fault.mode == "stall":
                    room = fault.stall_after_bytes - self.downstream_bytes
                    if room <= 0:
                        self.stalled_at = self.stalled_at or time.monotonic()
                        self._stop.wait()  # keep the connection open, send nothing more
                        return
                    data = data[:room]
                if downstream and fault.mode == "throttle":
                    time.sleep(len(data) / fault.bytes_per_s)
                with self._lock:
                    if downstream:
                        self.downstream_bytes += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
