"""The download stage against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dtrepro.data.d4rl import dataset_url
from dtrepro.data.download import DownloadParams, download
from dtrepro.errors import DtreproError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    payload: bytes
    drop_after: int | None = None  # close the first full response after this many bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server(hopper_file):
    state = Server(hopper_file.read_bytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            if self.path == "/missing.hdf5":
                return self.send_error(404, "Not Found")
            if self.path == "/login.hdf5":
                body = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
                return self._send(200, body, "text/html; charset=utf-8")
            if self.path == "/unlabelled-html.hdf5":
                return self._send(200, b"<html><body>moved</body></html>", "application/octet-stream")
            if self.path == "/flaky.hdf5":
                return self._send(503, b"busy", "text/plain") if len(state.requests) == 1 else self._range(rng)
            return self._range(rng)

        def _range(self, rng):
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            body = state.payload[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Type", "application/x-hdf5")
            self.send_header("Content-Length", str(len(body)))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(state.payload) - 1}/{len(state.payload)}")
            self.end_headers()
            if state.drop_after is not None and not rng:
                self.wfile.write(body[: state.drop_after])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

        def _send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def fast(url: str, **kw) -> DownloadParams:
    return DownloadParams(url=url, retries=3, timeout_s=2, give_up_after_s=5, **kw)


def assert_nothing_left(out: Path):
    assert not out.exists()
    assert not out.with_name(out.name + ".part").exists()
    assert not out.with_name(out.name + ".sha256").exists()


def test_download_writes_file_and_its_hash(server, tmp_path):
    out = tmp_path / "data" / "raw.hdf5"
    digest = download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload
    assert digest == hashlib.sha256(server.payload).hexdigest()
    assert (tmp_path / "data" / "raw.hdf5.sha256").read_text() == f"{digest}  raw.hdf5\n"
    assert not (tmp_path / "data" / "raw.hdf5.part").exists()


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.drop_after = len(server.payload) // 3
    out = tmp_path / "raw.hdf5"
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload
    (first, no_range), (second, rng) = server.requests
    assert first == second == "/hopper.hdf5" and no_range is None
    resumed_at = int(rng.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= server.drop_after  # what arrived before the drop was kept


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    out.with_name("raw.hdf5.part").write_bytes(server.payload[:12345])
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload
    assert server.requests == [("/hopper.hdf5", "bytes=12345-")]


def test_server_error_is_retried(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    download(fast(f"{server.url}/flaky.hdf5"), out)
    assert out.read_bytes() == server.payload and len(server.requests) == 2


def test_checksum_match_and_mismatch(server, tmp_path):
    good = hashlib.sha256(server.payload).hexdigest()
    download(fast(f"{server.url}/hopper.hdf5", sha256=good.upper()), tmp_path / "ok.hdf5")
    out = tmp_path / "raw.hdf5"
    with pytest.raises(DtreproError, match=r"SHA-256 .* but data.sha256 expects 0{64}"):
        download(fast(f"{server.url}/hopper.hdf5", sha256="0" * 64), out)
    assert_nothing_left(out)


def test_404_fails_at_once_with_the_url(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    with pytest.raises(DtreproError, match=r"missing.hdf5 failed: the server answered HTTP 404"):
        download(fast(f"{server.url}/missing.hdf5"), out)
    assert len(server.requests) == 1
    assert_nothing_left(out)


@pytest.mark.parametrize("path", ["/login.hdf5", "/unlabelled-html.hdf5"])
def test_html_instead_of_hdf5_is_refused(server, tmp_path, path):
    out = tmp_path / "raw.hdf5"
    with pytest.raises(DtreproError, match="HTML"):
        download(fast(f"{server.url}{path}"), out)
    assert_nothing_left(out)


def test_no_listener_fails_within_30_s_with_advice(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hopper_medium-v2.hdf5"
    out = tmp_path / "raw.hdf5"
    start = time.monotonic()
    with pytest.raises(DtreproError) as info:
        download(DownloadParams(url=url), out)  # the defaults of params.yaml
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert url in message and "data.url" in message and "data.source: collect" in message
    assert_nothing_left(out)


@pytest.mark.parametrize("form", ["path", "file"])
def test_local_path_and_file_url(hopper_file, tmp_path, form):
    url = str(hopper_file) if form == "path" else hopper_file.as_uri()
    out = tmp_path / "raw.hdf5"
    download(DownloadParams(url=url), out)
    assert out.read_bytes() == hopper_file.read_bytes()


def test_dataset_names_map_to_d4rl_urls():
    base = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
    assert dataset_url("hopper-medium-v2") == f"{base}/gym_mujoco_v2/hopper_medium-v2.hdf5"
    assert dataset_url("hopper-medium-replay-v1") == f"{base}/gym_mujoco_v1/hopper_medium_replay-v1.hdf5"
    assert dataset_url("hopper-medium-v0") == f"{base}/gym_mujoco/hopper_medium.hdf5"
    assert dataset_url("walker2d-medium-replay-v0") == f"{base}/gym_mujoco/walker_mixed.hdf5"
    assert dataset_url("halfcheetah-medium-expert-v0") == f"{base}/gym_mujoco/halfcheetah_medium_expert.hdf5"
    with pytest.raises(DtreproError, match="Unknown D4RL dataset name 'hopper-mediun-v2'"):
        dataset_url("hopper-mediun-v2")


def test_stage_script_reports_one_paragraph_and_exit_2(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    proc = subprocess.run(
        [sys.executable, "stages/download.py", "--url", f"{server.url}/missing.hdf5", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Downloading") and "404" in proc.stderr
    assert_nothing_left(out)
