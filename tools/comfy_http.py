"""A ComfyUI server from the outside, through its own HTTP API. Standard library only.

- start_server / stop_server: run ComfyUI's main.py as a child process, stop it by its PID;
- server_for: the URL of a running ComfyUI, or of one started for a block of code and stopped after it;
- ComfyClient: queue an API-format prompt (POST /prompt), follow it on the /ws websocket
  (progress per step, node states), read /history and download outputs with /view.
"""

import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import NamedTuple, Optional


class ComfyError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(comfyui: str, port: int = 0, args=(), python: str = sys.executable, log_path=None, timeout: float = 180.0):
    """Start ComfyUI (its main.py) on 127.0.0.1; (process, url) once it answers HTTP."""
    main = os.path.join(comfyui, "main.py")
    if not os.path.isfile(main):
        raise ComfyError(f"{comfyui} is not a ComfyUI folder: it has no main.py")
    port = port or free_port()
    command = [python, main, "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch", *args]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        if log_path:
            log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        ComfyClient(url).wait_until_ready(timeout, process, log_path)
    except BaseException:
        stop_server(process)
        raise
    return process, url


def stop_server(process, timeout: float = 30.0) -> None:
    """Stop a server started by start_server: SIGTERM to its PID, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout)


class Server(NamedTuple):
    url: str
    process: Optional[subprocess.Popen] = None  # None: a server that was running already
    log_path: Optional[str] = None


@contextlib.contextmanager
def server_for(url=None, comfyui=None, port: int = 0, comfyui_args=(), python: str = sys.executable, log_path=None):
    """A ComfyUI for a block of code: the one at `url` once it answers, or else one started in the
    folder `comfyui` (its log in log_path) and stopped by its PID when the block ends."""
    if url:
        ComfyClient(url).wait_until_ready(10)
        yield Server(url)
        return
    print(f"starting ComfyUI in {comfyui} (log: {log_path})", file=sys.stderr, flush=True)
    process, url = start_server(comfyui, port, comfyui_args, python, log_path)
    print(f"started ComfyUI (pid {process.pid}) at {url}", file=sys.stderr, flush=True)
    try:
        yield Server(url, process, log_path)
    finally:
        stop_server(process)
        print(f"stopped ComfyUI (pid {process.pid})", file=sys.stderr, flush=True)


class WebSocket:
    """The client side of RFC 6455, as much as ComfyUI's /ws needs: text and binary frames, ping, close.

    Frames are parsed from a buffer only once complete, so a receive timeout (ComfyUI is quiet
    while it loads a model) never loses data and the next recv() carries on."""

    def __init__(self, url: str, quiet: float):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30.0)
        self.buffer = b""
        self.fragments, self.kind = b"", None
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall((
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ComfyError(f"websocket handshake with {url} failed: {head[:200]!r}")
        self.sock.settimeout(quiet)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)  # raises socket.timeout when quiet; the buffer stays intact
        if not chunk:
            raise ConnectionError("websocket closed by the server")
        self.buffer += chunk

    def _frame(self):
        """(fin, opcode, payload) of the first complete frame in the buffer, consumed; None if incomplete."""
        if len(self.buffer) < 2:
            return None
        b0, b1 = self.buffer[0], self.buffer[1]
        n, at = b1 & 0x7F, 2
        if n >= 126:
            size = 2 if n == 126 else 8
            if len(self.buffer) < at + size:
                return None
            n, at = int.from_bytes(self.buffer[at:at + size], "big"), at + size
        mask = None
        if b1 & 0x80:
            mask, at = self.buffer[at:at + 4], at + 4
        if len(self.buffer) < at + n:
            return None
        payload, self.buffer = self.buffer[at:at + n], self.buffer[at + n:]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        """The next message: str for text, bytes for binary. Raises socket.timeout when quiet."""
        while True:
            frame = self._frame()
            if frame is None:
                self._fill()
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the server")
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode != 0xA:
                self.kind = self.kind if opcode == 0x0 else opcode
                self.fragments += payload
                if fin:
                    message, kind, self.fragments, self.kind = self.fragments, self.kind, b"", None
                    return message.decode() if kind == 0x1 else message

    def close(self) -> None:
        try:
            self._send(0x8)
        except OSError:
            pass
        self.sock.close()


class ComfyClient:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, data=None, timeout: float = 60.0) -> bytes:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raise ComfyError(describe_rejection(e.code, e.read())) from None

    def get(self, path: str):
        return json.loads(self._request(path))

    def get_bytes(self, path: str) -> bytes:
        return self._request(path)

    def post(self, path: str, data):
        reply = self._request(path, data)
        return json.loads(reply) if reply.strip() else None

    def wait_until_ready(self, timeout: float, process=None, log_path=None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ComfyError(f"ComfyUI exited with code {process.returncode} while starting{log_tail(log_path)}")
            try:
                self.get("/system_stats")
                return
            except (OSError, ComfyError):
                time.sleep(0.5)
        raise ComfyError(f"ComfyUI did not answer at {self.url} within {timeout:.0f} s{log_tail(log_path)}")

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict, extra_data=None) -> str:
        reply = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id, "extra_data": extra_data or {}})
        return reply["prompt_id"]

    def history(self, prompt_id: str):
        return self.get(f"/history/{prompt_id}").get(prompt_id)

    def view(self, file: dict) -> bytes:
        query = urllib.parse.urlencode({k: file.get(k, "") for k in ("filename", "subfolder", "type")})
        return self.get_bytes(f"/view?{query}")

    def run(self, prompt: dict, on_event=None, timeout: float = 3600.0, extra_data=None, quiet: float = 10.0) -> dict:
        """Queue a prompt and wait for it; its /history entry. on_event(type, data) sees its messages.
        After `quiet` seconds without a message the history is checked, in case the socket missed the end."""
        ws = WebSocket(self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}", quiet)
        try:
            prompt_id = self.queue(prompt, extra_data)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    message = ws.recv()
                except socket.timeout:  # loading a model sends nothing for a while
                    if (entry := self.history(prompt_id)) and entry.get("status", {}).get("completed") is not None:
                        return self._finished(entry, prompt_id)
                    continue
                if not isinstance(message, str):
                    continue  # binary: latent previews
                event = json.loads(message)
                data = event.get("data", {})
                if data.get("prompt_id", prompt_id) != prompt_id:
                    continue
                if on_event is not None:
                    on_event(event["type"], data)
                if event["type"] == "execution_error":
                    raise ComfyError(
                        f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
                        f"{data.get('exception_type')}: {data.get('exception_message')}"
                    )
                if event["type"] == "execution_interrupted":
                    raise ComfyError("the run was interrupted in ComfyUI")
                if event["type"] == "execution_success" or (event["type"] == "executing" and data.get("node") is None):
                    return self._finished(self.history(prompt_id), prompt_id)
            raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
        finally:
            ws.close()

    def _finished(self, entry, prompt_id: str) -> dict:
        for _ in range(40):  # the history is written just after the last message
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                break
            time.sleep(0.25)
            entry = self.history(prompt_id)
        if entry is None or not entry["status"].get("completed"):
            raise ComfyError(f"prompt {prompt_id} failed: {json.dumps(entry and entry.get('status'))[:2000]}")
        return entry


def describe_rejection(code: int, body: bytes) -> str:
    """A readable message from ComfyUI's error reply (POST /prompt: validation errors per node)."""
    try:
        reply = json.loads(body)
    except ValueError:
        return f"HTTP {code}: {body[:500].decode(errors='replace')}"
    error = reply.get("error", {})
    lines = [f"ComfyUI rejected the prompt (HTTP {code}): {error.get('message', reply)} {error.get('details', '')}".rstrip()]
    for node_id, node in reply.get("node_errors", {}).items():
        for e in node.get("errors", []):
            lines.append(f"  node {node_id} ({node.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "\n".join(lines)


def log_tail(log_path, lines: int = 30) -> str:
    if not log_path or not os.path.exists(log_path):
        return ""
    with open(log_path, "rb") as f:
        tail = f.read().decode(errors="replace").splitlines()[-lines:]
    return f"; the end of its log ({log_path}):\n" + "\n".join(tail)
