"""A stand-in Docker Engine on loopback for the doors' tests without Docker: the few endpoints
`invoke exec` uses (ping, version, container inspect, exec create/start/inspect). An exec runs its
argv on this host, so quoting, exit codes and output are real; every request is recorded."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "1.43"


@dataclass
class FakeEngine:
    workdir: str
    exit_code_known: bool = True  # False: the exec record never gets an exit code
    labels: dict = field(default_factory=lambda: {"sgl-ci": "1", "sgl-ci.arch": "mi300"})
    execs: list = field(default_factory=list)  # what each exec was created with
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeEngine:
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_HEAD(self):
                self._json(200, {})

            def do_GET(self):
                path = re.sub(r"^/v[0-9.]+", "", self.path.split("?")[0])
                if path == "/_ping":
                    data = b"OK"
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(data)
                elif path == "/version":
                    self._json(200, {"ApiVersion": API, "Version": "24.0.0", "MinAPIVersion": "1.12"})
                elif m := re.fullmatch(r"/containers/([^/]+)/json", path):
                    self._json(200, {"Id": "c0ffee", "Name": "/" + m.group(1), "Config": {"Labels": engine.labels},
                                     "State": {"Status": "running", "Running": True, "Pid": 1}})
                elif m := re.fullmatch(r"/exec/([^/]+)/json", path):
                    record = engine.execs[int(m.group(1))]
                    code = record.get("exit_code") if engine.exit_code_known else None
                    self._json(200, {"Running": False, "ExitCode": code, "Pid": 0})
                else:
                    self._json(404, {"message": f"no such endpoint {path}"})

            def do_POST(self):
                path = re.sub(r"^/v[0-9.]+", "", self.path.split("?")[0])
                body = self._body()
                if re.fullmatch(r"/containers/[^/]+/exec", path):
                    engine.execs.append({"cmd": body.get("Cmd"), "env": dict(e.split("=", 1) for e in body.get("Env") or []),
                                         "workdir": body.get("WorkingDir")})
                    self._json(201, {"Id": str(len(engine.execs) - 1)})
                elif m := re.fullmatch(r"/exec/([^/]+)/start", path):
                    record = engine.execs[int(m.group(1))]
                    done = subprocess.run(record["cmd"], cwd=engine.workdir, capture_output=True, timeout=60,
                                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **record["env"]})
                    record["exit_code"] = done.returncode
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.docker.raw-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                    time.sleep(0.2)  # the client reads the headers, then the raw socket
                    for kind, data in ((1, done.stdout), (2, done.stderr)):
                        if data:
                            self.wfile.write(struct.pack(">BxxxL", kind, len(data)) + data)
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self._json(404, {"message": f"no such endpoint {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
