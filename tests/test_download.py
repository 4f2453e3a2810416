"""The download stage against a real HTTP server on loopback."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from dtrepro.data.d4rl import write_d4rl
from dtrepro.data.download import download, part_source
from dtrepro.params import DownloadParams
from dtrepro.registry.datasets import dataset_file
from dtrepro.runtime.errors import DtreproError

from helpers import HOPPER, ROOT, params


@dataclass
class Server:
    payload: bytes
    drop_after: int | None = None  # close the first full response after this many bytes
    range_reply: str = "right"  # how a Range request is answered: right, from_zero, early, bad_header, whole
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""
    etag: str | None = None


@pytest.fixture
def server(hopper_file):
    state = Server(hopper_file.read_bytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            if self.path.startswith("/mirror/"):  # D4RL's own paths under a mirror's base URL
                return (
                    self._range(rng)
                    if self.path == "/mirror/gym_mujoco_v2/hopper_medium-v2.hdf5"
                    else self.send_error(404)
                )
            if self.path == "/missing.hdf5":
                return self.send_error(404, "Not Found")
            if self.path == "/login.hdf5":
                body = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
                return self._send(200, body, "text/html; charset=utf-8")
            if self.path == "/unlabelled-html.hdf5":
                return self._send(200, b"<html><body>moved</body></html>", "application/octet-stream")
            if self.path == "/flaky.hdf5":
                return self._send(503, b"busy", "text/plain") if len(state.requests) == 1 else self._range(rng)
            if self.path == "/trickle.hdf5":  # one byte every 0.3 s: never a read time-out, never done
                self.send_response(200)
                self.send_header("Content-Length", str(len(state.payload)))
                self.end_headers()
                for byte in state.payload[:40]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
                return None
            return self._range(rng)

        def _range(self, rng):
            asked = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            start = {"from_zero": 0, "early": max(0, asked - 4096)}.get(state.range_reply, asked)
            partial = rng is not None and state.range_reply != "whole"
            body = state.payload[start:] if partial else state.payload
            self.send_response(206 if partial else 200)
            self.send_header("Content-Type", "application/x-hdf5")
            if state.etag:
                self.send_header("ETag", state.etag)
            self.send_header("Content-Length", str(len(body)))
            if partial:  # bad_header: the body starts at the offset, the header says one byte later
                claimed = start + (state.range_reply == "bad_header")
                self.send_header("Content-Range", f"bytes {claimed}-{len(state.payload) - 1}/{len(state.payload)}")
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
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def fast(url: str, **kw) -> DownloadParams:
    """A quick-failing download of a test file (not D4RL's, so its published hash is not checked)."""
    values = {"url": url, "retries": 3, "timeout_s": 2, "give_up_after_s": 5, "check_sha256": False, **kw}
    return DownloadParams.from_params(params(data=values), HOPPER)


def assert_nothing_left(out: Path):
    assert not out.exists()
    assert not out.with_name(out.name + ".part").exists()
    assert not out.with_name(out.name + ".sha256").exists()


def test_download_writes_file_and_its_hash(server, tmp_path):
    out = tmp_path / "data" / "raw.hdf5"
    digest, _ = download(fast(f"{server.url}/hopper.hdf5"), out)
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


def interrupted(server, out, path="/hopper.hdf5", size=None):
    """What a download of `path` interrupted (Ctrl-C) after `size` bytes (a third) leaves for the next run."""
    part = out.with_name(out.name + ".part")
    part.write_bytes(server.payload[: size or len(server.payload) // 3])
    part_source(part).write_text(json.dumps({"url": f"{server.url}{path}", "etag": server.etag}))


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    interrupted(server, out)
    size = out.with_name("raw.hdf5.part").stat().st_size
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload
    assert server.requests == [("/hopper.hdf5", f"bytes={size}-")]
    assert not part_source(out.with_name("raw.hdf5.part")).exists()


def test_a_part_of_another_url_is_never_spliced_in(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    interrupted(server, out, "/other.hdf5")
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload  # B's file whole, none of A's bytes
    assert server.requests == [("/hopper.hdf5", None)]


def test_a_part_of_unknown_origin_is_not_resumed(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    out.with_name("raw.hdf5.part").write_bytes(b"x" * 12345)
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload and server.requests == [("/hopper.hdf5", None)]


def test_a_file_changed_on_the_server_since_the_part_starts_over(server, tmp_path, hopper):
    out = tmp_path / "raw.hdf5"
    server.etag = '"v1"'
    interrupted(server, out)
    data = copy.copy(hopper[0])  # the session's dataset stays as it is
    data.arrays = {**data.arrays, "rewards": data.arrays["rewards"] * 2}
    write_d4rl(tmp_path / "v2.hdf5", data)
    server.payload, server.etag = (tmp_path / "v2.hdf5").read_bytes(), '"v2"'  # the same file, another version
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload
    assert server.requests[0][1] is not None and server.requests[-1] == ("/hopper.hdf5", None)


def test_server_error_is_retried(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    download(fast(f"{server.url}/flaky.hdf5"), out)
    assert out.read_bytes() == server.payload and len(server.requests) == 2


def test_checksum_match_and_mismatch(server, tmp_path):
    good = hashlib.sha256(server.payload).hexdigest()
    download(fast(f"{server.url}/hopper.hdf5", sha256=good.upper(), check_sha256=True), tmp_path / "ok.hdf5")
    out = tmp_path / "raw.hdf5"
    with pytest.raises(DtreproError, match=rf"SHA-256 {good}, but data.sha256 is 0{{64}}"):
        download(fast(f"{server.url}/hopper.hdf5", sha256="0" * 64, check_sha256=True), out)
    assert_nothing_left(out)


def test_the_published_size_and_hash_are_checked_by_default(server, tmp_path):
    """data.dataset hopper-medium-v2 from a mirror that serves another file: refused, naming both."""
    out = tmp_path / "raw.hdf5"
    with pytest.raises(DtreproError) as info:
        download(fast(f"{server.url}/hopper.hdf5", check_sha256=True), out)
    message = str(info.value)
    assert f"{len(server.payload):,} bytes, but hopper-medium-v2 has 152,756,557" in message
    assert "data.check_sha256: false" in message
    assert_nothing_left(out)
    digest, _ = download(fast(f"{server.url}/hopper.hdf5", check_sha256=False), out)  # turned off: accepted
    assert digest == hashlib.sha256(server.payload).hexdigest()


def test_every_published_v2_file_has_a_size_and_a_hash():
    for env in ("hopper", "halfcheetah", "walker2d"):
        for kind in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            file = dataset_file(f"{env}-{kind}-v2")
            assert file.bytes > 10_000_000 and len(file.sha256) == 64, file
    assert dataset_file("hopper-medium-v2").sha256.startswith("5bdf1bc4a713")


@pytest.mark.parametrize("reply", ["from_zero", "early", "bad_header"])
def test_a_206_that_does_not_start_at_the_offset_restarts_cleanly(server, tmp_path, reply):
    server.range_reply = reply
    out = tmp_path / "raw.hdf5"
    interrupted(server, out, size=12345)
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload  # never the wrong bytes appended
    assert server.requests[0] == ("/hopper.hdf5", "bytes=12345-") and server.requests[-1][1] is None


def test_a_200_to_a_range_request_restarts_from_byte_0(server, tmp_path):
    server.range_reply = "whole"
    out = tmp_path / "raw.hdf5"
    interrupted(server, out, size=12345)
    download(fast(f"{server.url}/hopper.hdf5"), out)
    assert out.read_bytes() == server.payload and len(server.requests) == 1


def test_a_trickling_server_meets_the_overall_deadline(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    start = time.monotonic()
    with pytest.raises(DtreproError, match=r"took longer than data.deadline_s=2 s"):
        download(fast(f"{server.url}/trickle.hdf5", deadline_s=2), out)
    assert time.monotonic() - start < 6
    assert not out.exists() and not out.with_name("raw.hdf5.sha256").exists()


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


@pytest.mark.slow
def test_no_listener_fails_within_30_s_with_advice(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hopper_medium-v2.hdf5"
    out = tmp_path / "raw.hdf5"
    start = time.monotonic()
    with pytest.raises(DtreproError) as info:
        download(DownloadParams.from_params(params(data={"url": url, "retries": 2}), HOPPER), out)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert url in message and "data.url" in message and "collected-<env>-<kind>" in message
    assert_nothing_left(out)


@pytest.mark.parametrize("form", ["path", "file"])
def test_local_path_and_file_url(hopper_file, tmp_path, form):
    url = str(hopper_file) if form == "path" else hopper_file.as_uri()
    out = tmp_path / "raw.hdf5"
    download(fast(url), out)
    assert out.read_bytes() == hopper_file.read_bytes()


def test_dataset_names_map_to_d4rl_urls():
    base = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
    assert dataset_file("hopper-medium-v2").url == f"{base}/gym_mujoco_v2/hopper_medium-v2.hdf5"
    assert dataset_file("hopper-medium-replay-v1").url == f"{base}/gym_mujoco_v1/hopper_medium_replay-v1.hdf5"
    assert dataset_file("hopper-medium-v0").url == f"{base}/gym_mujoco/hopper_medium.hdf5"
    assert dataset_file("walker2d-medium-replay-v0").url == f"{base}/gym_mujoco/walker_mixed.hdf5"
    assert dataset_file("halfcheetah-medium-expert-v0").url == f"{base}/gym_mujoco/halfcheetah_medium_expert.hdf5"
    with pytest.raises(DtreproError, match="Unknown dataset name 'hopper-mediun-v2'"):
        dataset_file("hopper-mediun-v2")


def test_stage_script_reports_one_paragraph_and_exit_2(server, tmp_path):
    out = tmp_path / "raw.hdf5"
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params(data={"url": f"{server.url}/missing.hdf5"})))
    outputs = ["--output", str(out), "--policy", str(tmp_path / "p.json"), "--metrics", str(tmp_path / "m.json")]
    outputs += ["--minari-dir", str(tmp_path / "minari")]
    proc = subprocess.run(
        [sys.executable, "stages/source.py", "--params", str(params_path), "--dataset", HOPPER, *outputs],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Downloading") and "404" in proc.stderr
    assert_nothing_left(out)


def dead_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def d4rl_down(monkeypatch):
    """D4RL's server unreachable, as it has been for days at a time: its address is a dead loopback port."""
    base = f"http://127.0.0.1:{dead_port()}/offline_rl"
    monkeypatch.setattr("dtrepro.registry.datasets.D4RL_BASE_URL", base)
    return base


def mirrored(*mirrors, **kw) -> DownloadParams:
    values = {"url": None, "mirrors": list(mirrors), "retries": 1, "timeout_s": 1, "give_up_after_s": 1}
    return DownloadParams.from_params(params(data={**values, "check_sha256": False, **kw}), HOPPER)


def test_a_mirror_serves_the_file_when_d4rl_is_down(server, tmp_path, d4rl_down):
    out = tmp_path / "raw.hdf5"
    digest, url = download(mirrored(f"{server.url}/mirror"), out)
    assert url == f"{server.url}/mirror/gym_mujoco_v2/hopper_medium-v2.hdf5"
    assert out.read_bytes() == server.payload and digest == hashlib.sha256(server.payload).hexdigest()


def test_a_local_folder_is_a_mirror_too(hopper_file, tmp_path, d4rl_down):
    folder = tmp_path / "d4rl"
    (folder / "gym_mujoco_v2").mkdir(parents=True)
    (folder / "gym_mujoco_v2" / "hopper_medium-v2.hdf5").write_bytes(hopper_file.read_bytes())
    digest, url = download(mirrored(str(folder)), tmp_path / "raw.hdf5")
    assert url == str(folder / "gym_mujoco_v2" / "hopper_medium-v2.hdf5")


def test_every_source_down_is_one_paragraph_naming_each(server, tmp_path, d4rl_down):
    out = tmp_path / "raw.hdf5"
    other = f"http://127.0.0.1:{dead_port()}/d4rl"
    with pytest.raises(DtreproError) as info:
        download(mirrored(other), out)
    message = str(info.value)
    assert f"(1) {d4rl_down}/gym_mujoco_v2/hopper_medium-v2.hdf5" in message
    assert f"(2) {other}/gym_mujoco_v2/hopper_medium-v2.hdf5" in message and "data.mirrors" in message
    assert_nothing_left(out)


def test_a_mirror_with_a_corrupt_copy_falls_through_to_the_next(server, tmp_path, d4rl_down):
    bad = tmp_path / "bad" / "gym_mujoco_v2"
    bad.mkdir(parents=True)
    (bad / "hopper_medium-v2.hdf5").write_bytes(server.payload[:1000])
    good_hash = hashlib.sha256(server.payload).hexdigest()
    both = mirrored(str(tmp_path / "bad"), f"{server.url}/mirror", sha256=good_hash, check_sha256=True)
    digest, url = download(both, tmp_path / "r")
    assert url.startswith(server.url) and digest == good_hash


def test_retries_count_the_attempts_and_each_retry_is_one_line_with_its_reason(tmp_path, capsys):
    """data.retries: 3 means three attempts (it was four); each failed attempt is one line naming the cause, not
    urllib3's chain of wrapped errors."""
    url = f"http://127.0.0.1:{dead_port()}/hopper_medium-v2.hdf5"
    with pytest.raises(DtreproError) as info:
        download(fast(url, retries=3, give_up_after_s=60), tmp_path / "raw.hdf5")
    printed = capsys.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if line.startswith("download: ")]
    assert [line.split(":")[1] for line in lines] == [" attempt 1 of 3", " attempt 2 of 3"]
    assert all("Connection refused" in line and "HTTPConnection" not in line and len(line) < 120 for line in lines)
    assert "gave up after 3 attempt(s)" in str(info.value) and "Connection refused" in str(info.value)
