"""A Docker-Hub-style front for tag lists, on loopback: `GET /v2/<repo>/tags/list` answers 401 with
`WWW-Authenticate: Bearer realm=...,service=...,scope=...` until a token from its own `/token`
realm comes along, pages the list per the registry API (`n`, `last`, a `Link: <...>; rel="next"`
header, `n` capped like Hub caps it), and logs every request with its Authorization header.
The tags come from a callable: a fixed list, or a real registry's list behind it."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class HubStub:
    tags: Callable[[], list[str]]
    max_page: int = 1000  # the largest n honoured
    user: str | None = None  # a token for this user needs this password; anonymous tokens always work
    password: str | None = None
    status: int | None = None  # answer every tag-list request with this status instead
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path with query, Authorization)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    SERVICE = "stub.registry"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> HubStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization")
                stub.seen.append((self.path, authorization))
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/token":
                    self._token(authorization, query)
                elif url.path.startswith("/v2/") and url.path.endswith("/tags/list"):
                    self._tags(url.path[len("/v2/"):-len("/tags/list")], authorization, query)
                else:
                    self._send(404, {"errors": [{"code": "NOT_FOUND"}]})

            def _token(self, authorization: str | None, query: dict[str, str]) -> None:
                if authorization:
                    user, _, password = base64.b64decode(authorization.split(" ", 1)[1]).decode().partition(":")
                    if (user, password) != (stub.user, stub.password):
                        self._send(401, {"details": "incorrect username or password"})
                        return
                    self._send(200, {"token": f"user-{user}-{query.get('scope')}"})
                    return
                self._send(200, {"token": f"anonymous-{query.get('scope')}"})

            def _tags(self, repository: str, authorization: str | None, query: dict[str, str]) -> None:
                if not (authorization or "").startswith("Bearer "):
                    realm = f"http://127.0.0.1:{stub.port}/token"
                    challenge = (f'Bearer realm="{realm}",service="{stub.SERVICE}",'
                                 f'scope="repository:{repository}:pull"')
                    self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge})
                    return
                if stub.status:
                    self._send(stub.status, {"errors": [{"code": "UNAVAILABLE"}]})
                    return
                every = sorted(stub.tags())
                last = query.get("last")
                rest = [t for t in every if last is None or t > last]
                n = min(int(query.get("n", stub.max_page)), stub.max_page)
                page, more = rest[:n], len(rest) > n
                headers = {}
                if more:
                    following = urllib.parse.urlencode({"n": n, "last": page[-1]})
                    headers["Link"] = f'</v2/{repository}/tags/list?{following}>; rel="next"'
                self._send(200, {"name": repository, "tags": page}, headers)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def tag_list_requests(self) -> list[tuple[str, str | None]]:
        return [s for s in self.seen if "/tags/list" in s[0]]

    def token_requests(self) -> list[tuple[str, str | None]]:
        return [s for s in self.seen if s[0].startswith("/token")]
