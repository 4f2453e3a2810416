"""Fetch a dataset file from a URL or a local path, resumably and verifiably.

The bytes go to `<output>.part` (kept between runs, so a later run resumes it
with an HTTP Range request), with a progress bar, retrying with exponential
backoff after a dropped connection or a server error. Once complete the file
is checked against `sha256` when one is given, opened as a D4RL file, and only
then renamed onto `<output>`, with the hash it had written to `<output>.sha256`.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from dtrepro.atomic import atomic_output, write_json
from dtrepro.data.checksum import file_sha256
from dtrepro.data.d4rl import check_d4rl_file, dataset_url
from dtrepro.errors import DtreproError
from dtrepro.params import from_section

CHUNK = 1 << 16  # small enough that a dropped connection loses little of what arrived
OFFLINE_ADVICE = (
    "If this machine has no internet access, copy the file here by other means and set "
    "data.url to its local path (or a file:// URL), or set data.source: collect to make a "
    "Hopper dataset offline (as `make demo` does)."
)


@dataclass(frozen=True)
class DownloadParams:
    """The download-related keys of the `data` section of params.yaml."""

    dataset: str = "hopper-medium-v2"
    url: str | None = None
    sha256: str | None = None
    retries: int = 5
    timeout_s: float = 10.0
    give_up_after_s: float = 20.0

    @classmethod
    def from_dict(cls, section: dict) -> "DownloadParams":
        return from_section(cls, section, "data", other_readers=("source",))

    @property
    def resolved_url(self) -> str:
        return self.url or dataset_url(self.dataset)


class _Retry(Exception):
    """A failure worth another attempt (dropped connection, time-out, server error)."""


def _is_local(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme in ("", "file")


def _local_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url)


def _copy_local(url: str, part: Path) -> None:
    source = _local_path(url)
    if not source.is_file():
        raise DtreproError(f"data.url points to {source}, which is not a file. Give the path of a D4RL HDF5 file.")
    with open(source, "rb") as src, open(part, "wb") as dst, _bar(source.name, source.stat().st_size, 0) as bar:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def _bar(name: str, total: int | None, initial: int) -> tqdm:
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, mininterval=1.0)


def _attempt(session: requests.Session, url: str, part: Path, timeout: float) -> None:
    """One HTTP request: resume from the `.part` file's size, append until the server stops."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, stream=True, timeout=timeout, headers=headers) as resp:
            if resp.status_code == 416 and offset:  # our partial file is not a prefix of theirs
                part.unlink()
                raise _Retry("the server refused to resume; starting over")
            if resp.status_code >= 500 or resp.status_code == 429:
                raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
            if resp.status_code >= 400:
                raise DtreproError(
                    f"Downloading {url} failed: the server answered HTTP {resp.status_code} "
                    f"{resp.reason}. Check data.dataset or data.url. {OFFLINE_ADVICE}"
                )
            if resp.headers.get("Content-Type", "").startswith("text/html"):
                raise DtreproError(
                    f"Downloading {url} failed: the server sent an HTML page, not an HDF5 file "
                    f"(a login, error or moved-page notice). Open the URL in a browser to see why, "
                    f"then set data.url to the file's direct address. {OFFLINE_ADVICE}"
                )
            resumed = resp.status_code == 206
            if offset and not resumed:
                offset = 0  # the server ignored the Range header: start over
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with open(part, "ab" if resumed else "wb") as out, _bar(part.name[: -len(".part")], total, offset) as bar:
                for chunk in resp.iter_content(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
        raise _Retry(str(err)) from None
    if total is not None and part.stat().st_size < total:
        raise _Retry(f"connection closed after {part.stat().st_size} of {total} bytes")


def _fetch_http(url: str, part: Path, params: DownloadParams) -> None:
    session = requests.Session()
    failures, delay = 0, 0.5
    last_progress = time.monotonic()
    while True:
        size_before = part.stat().st_size if part.exists() else 0
        try:
            _attempt(session, url, part, params.timeout_s)
            return
        except _Retry as err:
            size_after = part.stat().st_size if part.exists() else 0
            if size_after > size_before:  # progress: the connection works, keep going
                failures, delay, last_progress = 0, 0.5, time.monotonic()
            failures += 1
            waited = time.monotonic() - last_progress
            if failures > params.retries or waited + delay > params.give_up_after_s:
                raise DtreproError(
                    f"Could not download {url}: {err} (gave up after {failures} attempt(s) and "
                    f"{waited:.0f} s without progress). {OFFLINE_ADVICE}"
                ) from None
            tqdm.write(f"download: {err}; retrying in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def download(params: DownloadParams, output: str | os.PathLike) -> str:
    """Fetch `params.resolved_url` to `output`; return the file's SHA-256. Nothing half-done is left at `output`."""
    url = params.resolved_url
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    if _is_local(url):
        part.unlink(missing_ok=True)
        _copy_local(url, part)
    else:
        _fetch_http(url, part, params)

    digest = file_sha256(part)
    if params.sha256 and digest.lower() != params.sha256.lower():
        part.unlink()
        raise DtreproError(
            f"The file from {url} has SHA-256 {digest}, but data.sha256 expects {params.sha256}. "
            f"The download is corrupt or the file changed upstream; it was deleted. Run again to "
            f"download it afresh, or correct data.sha256."
        )
    try:
        check_d4rl_file(part)
    except DtreproError as err:
        part.unlink()
        raise DtreproError(f"The file from {url} is not a usable D4RL dataset: {err}") from None

    with atomic_output(output.with_name(output.name + ".sha256")) as tmp:
        tmp.write_text(f"{digest}  {output.name}\n")
    os.replace(part, output)
    return digest


def download_to_files(
    params: DownloadParams, output: str | os.PathLike, policy_path: str | os.PathLike, metrics_path: str | os.PathLike
) -> dict:
    """The `source` stage's outputs for a download: the file, a note on its behaviour policy, and metrics."""
    digest = download(params, output)
    write_json(
        policy_path,
        {
            "source": "download",
            "url": params.resolved_url,
            "policy": None,
            "note": "D4RL does not distribute the policies that collected its datasets.",
        },
    )
    metrics = {
        "source": "download",
        "dataset": params.dataset if not params.url else None,
        "bytes": Path(output).stat().st_size,
    }
    write_json(metrics_path, metrics)
    return {**metrics, "sha256": digest, "url": params.resolved_url}
