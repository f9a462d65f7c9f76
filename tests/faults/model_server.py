"""A misbehaving OpenAI-compatible model server on a loopback port: answers, hangs, stalls, dies or fails on demand."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading

PIECES = ["Standard", " shipping", " takes", " 3", " to", " 5", " business", " days", "."]
# Pieces sent before a stall or a drop: the customer has seen part of an answer when the model goes away.
PARTIAL = 3
MODES = ("ok", "hang", "stall", "drop", "reset", "error")


def _chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish_reason}
    ]}
    return f"data: {json.dumps(body)}\n\n".encode()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: ModelServer = self.server.owner  # type: ignore[attr-defined]
        self.rfile.readline()  # request line
        length = 0
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        server.requests.append(json.loads(self.rfile.read(length) or b"{}"))
        mode = server.mode
        if mode == "hang":
            # Accepts the request and says nothing, as a wedged or overloaded server does.
            server.release.wait()
            return
        if mode == "error":
            body = json.dumps({"error": {"message": "CUDA out of memory"}}).encode()
            self.wfile.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            return
        # A body delimited by the connection's close, so a dying server's FIN ends it without a protocol error.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        self.wfile.write(_chunk({"role": "assistant"}))
        pieces = PIECES if mode == "ok" else PIECES[:PARTIAL]
        for piece in pieces:
            self.wfile.write(_chunk({"content": piece}))
            self.wfile.flush()
        if mode == "stall":
            server.release.wait()
            return
        if mode == "drop":
            return  # the connection closes here, mid-answer: what a killed server process looks like
        if mode == "reset":
            # SO_LINGER 0: close with RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self.wfile.write(_chunk({}, "stop"))
        self.wfile.write(b"data: [DONE]\n\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ModelServer:
    """`mode` picks the behaviour of the next requests; `release` lets hanging handlers go (set at stop)."""

    def __init__(self, mode: str = "ok") -> None:
        assert mode in MODES
        self.mode = mode
        self.requests: list[dict] = []
        self.release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-model-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
