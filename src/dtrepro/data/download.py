"""Fetch a dataset file from a URL or a local path, resumably and verifiably.

The bytes go to `<output>.part` (kept between runs, so a later run resumes it
with an HTTP Range request whose answer must start exactly where the part ends),
with a progress bar, retrying with exponential backoff after a dropped connection
or a server error, within an overall deadline. Once complete the file is checked
against its published size and SHA-256 (`d4rl_files.tsv`, or `data.sha256`)
unless `data.check_sha256` is false, opened as a D4RL file, and only then renamed
onto `<output>`, with the hash it had written to `<output>.sha256`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
import urllib.parse
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from dtrepro.data.checksum import file_sha256, write_sidecar
from dtrepro.data.d4rl import check_d4rl_file, require_regular_file
from dtrepro.params import DownloadParams
from dtrepro.runtime.atomic import write_json
from dtrepro.runtime.errors import DtreproError, is_disk_full
from dtrepro.runtime.progress import progress

CHUNK = 1 << 16  # small enough that a dropped connection loses little of what arrived
OFFLINE_ADVICE = (
    "If this machine has no internet access, copy the file here by other means and set "
    "data.url to its local path (or a file:// URL), put it in a folder under D4RL's own path and add the "
    "folder to data.mirrors, or study a dataset made here offline (collected-<env>-<kind>, as `make demo` does)."
)


class _Retry(Exception):
    """A failure worth another attempt (dropped connection, time-out, server error)."""


class _Deadline(Exception):
    """The whole download took longer than data.deadline_s."""


def _is_local(url: str) -> bool:
    return urllib.parse.urlparse(url).scheme in ("", "file")


def _local_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url)


@contextlib.contextmanager
def _filling(part: Path):
    """Writing `part`: on a full disk it is removed (it cannot grow there) and the error names it."""
    try:
        yield
    except OSError as err:
        if not is_disk_full(err):
            raise
        _discard(part)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(part)) from None


def _copy_local(url: str, part: Path) -> None:
    source = require_regular_file(_local_path(url), "data.url points to")
    with (
        _filling(part),
        open(source, "rb") as src,
        open(part, "wb") as dst,
        _bar(source.name, source.stat().st_size, 0) as bar,
    ):
        for chunk in iter(lambda: src.read(CHUNK), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def _bar(name: str, total: int | None, initial: int) -> tqdm:
    return progress(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header; None if it is not one."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", content_range or "")
    return int(match.group(1)) if match else None


VALIDATORS = {"etag": "ETag", "last_modified": "Last-Modified"}  # what says which version of a file a part holds


def part_source(part: Path) -> Path:
    """Where a partial download records what it is part of: the URL and the server's validators."""
    return part.with_name(part.name + ".source")


def _part_owner(part: Path, url: str) -> dict:
    """The record of `part` if it is a part of `url`'s file; otherwise the part is removed and {} returned."""
    try:
        owner = json.loads(part_source(part).read_text())
    except (OSError, ValueError):
        owner = {}
    if owner.get("url") != url:
        part.unlink(missing_ok=True)  # another source's bytes, or of unknown origin: never spliced in
        return {}
    return owner if part.exists() else {}


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part_source(part).unlink(missing_ok=True)


def _attempt(session: requests.Session, url: str, part: Path, timeout: float, deadline: float) -> None:
    """One HTTP request: resume from the `.part` file's size, append until the server stops.

    A part is resumed only from the URL it came from (`part_source`), and with `If-Range` on the server's
    ETag or Last-Modified, so that a file changed on the server is sent whole; a 206 whose validators differ
    from the part's is discarded too. A 206 must start exactly at the requested offset (its Content-Range
    says where it starts); any other answer to a Range request would corrupt the file, so the part is
    discarded and the download starts over.
    """
    owner = _part_owner(part, url)
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and (validator := owner.get("etag") or owner.get("last_modified")):
        headers["If-Range"] = validator
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
            resumed = _resumes(resp, url, part, offset, owner)
            offset = offset if resumed else 0  # a server that ignored the Range header sent the whole file
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                _filling(part),
                open(part, "ab" if resumed else "wb") as out,
                _bar(part.name[:-5], total, offset) as bar,
            ):
                while chunk := resp.raw.read1(CHUNK, decode_content=True):  # returns what has arrived
                    out.write(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() > deadline:
                        raise _Deadline(f"{part.stat().st_size:,} bytes had arrived")
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.HTTPError,
    ) as err:
        raise _Retry(reason(err)) from None
    if total is not None and part.stat().st_size < total:
        raise _Retry(f"connection closed after {part.stat().st_size} of {total} bytes")


def _resumes(resp: requests.Response, url: str, part: Path, offset: int, owner: dict) -> bool:
    """Whether the answer continues `part` at `offset` (a 206 of the same file starting there); a 200 starts a new
    part, recorded as `url`'s; a 206 of a changed file or from elsewhere discards the part (`_Retry`)."""
    now = {key: resp.headers.get(header) for key, header in VALIDATORS.items()}
    if resp.status_code != 206:
        part_source(part).write_text(json.dumps({"url": url, **now}) + "\n")
        return False
    if any(owner.get(k) and now[k] and owner[k] != now[k] for k in VALIDATORS):
        _discard(part)
        raise _Retry("the file on the server changed since the partial download; starting over")
    if _range_start(resp.headers.get("Content-Range")) != offset:
        part.unlink(missing_ok=True)
        raise _Retry(
            f"the server answered the request for bytes {offset}- with Content-Range "
            f"{resp.headers.get('Content-Range')!r}; discarded the partial file, starting over"
        )
    return True


def reason(err: BaseException) -> str:
    """The root cause of a requests/urllib3 error in a few words ("Name or service not known"), not the chain of
    wrappers whose text repeats the URL and the connection object."""
    while True:
        inner = getattr(err, "reason", None) or err.__cause__ or err.__context__
        if inner is None and err.args and isinstance(err.args[0], BaseException):
            inner = err.args[0]
        if not isinstance(inner, BaseException):
            break
        err = inner
    return " ".join(str(getattr(err, "strerror", None) or err).split())[:200]


def _fetch_http(url: str, part: Path, params: DownloadParams) -> None:
    session = requests.Session()
    failures, delay = 0, 0.5
    last_progress = time.monotonic()
    deadline = last_progress + params.deadline_s
    while True:
        size_before = part.stat().st_size if part.exists() else 0
        try:
            _attempt(session, url, part, params.timeout_s, deadline)
            return
        except _Deadline as err:
            raise DtreproError(
                f"Downloading {url} took longer than data.deadline_s={params.deadline_s:g} s ({err}); the server "
                f"is too slow. {part} is kept and the next run resumes it; raise data.deadline_s to wait longer. "
                f"{OFFLINE_ADVICE}"
            ) from None
        except _Retry as err:
            size_after = part.stat().st_size if part.exists() else 0
            if size_after > size_before:  # progress: the connection works, keep going
                failures, delay, last_progress = 0, 0.5, time.monotonic()
            failures += 1
            waited = time.monotonic() - last_progress
            if failures >= params.retries or waited + delay > params.give_up_after_s or time.monotonic() > deadline:
                raise DtreproError(
                    f"Could not download {url}: {err} (gave up after {failures} attempt(s) and "
                    f"{waited:.0f} s without progress). {OFFLINE_ADVICE}"
                ) from None
            tqdm.write(f"download: attempt {failures} of {params.retries}: {err}; retrying in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _fetch_and_check(url: str, part: Path, params: DownloadParams) -> str:
    """Fetch `url` into `part` and check it; its SHA-256. A failed check deletes the part."""
    if _is_local(url):
        _discard(part)
        _copy_local(url, part)
    else:
        _fetch_http(url, part, params)
    size, sha256 = params.expected
    seen = part.stat().st_size
    if size is not None and seen != size:
        _discard(part)
        raise DtreproError(
            f"The file from {url} has {seen:,} bytes, but {params.dataset} has {size:,} (its published size). "
            f"The download is corrupt or not that dataset; it was deleted. Run again to download it afresh; for a "
            f"file you changed on purpose, set data.check_sha256: false."
        )
    digest = file_sha256(part)
    if sha256 is not None and digest != sha256:
        _discard(part)
        where = "data.sha256" if params.sha256 else f"the published hash of {params.dataset}"
        raise DtreproError(
            f"The file from {url} has SHA-256 {digest}, but {where} is {sha256}. The download is corrupt or the "
            f"file changed; it was deleted. Run again to download it afresh; for a file you changed on purpose, "
            f"set data.check_sha256: false (the source metrics record that the check was off)."
        )
    try:
        check_d4rl_file(part)
    except DtreproError as err:
        _discard(part)
        raise DtreproError(f"The file from {url} is not a usable D4RL dataset: {err}") from None
    return digest


def download(params: DownloadParams, output: str | os.PathLike) -> tuple[str, str]:
    """Fetch the dataset to `output` from the first of `params.sources` that serves it whole and right.

    Returns (SHA-256, the source it came from). Nothing half-done is left at `output`; a partial download
    stays in `<output>.part` for the next run to resume from the same source.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    failures = []
    for i, url in enumerate(params.sources):
        if i:
            _discard(part)  # a part from another source is not resumed here
        try:
            digest = _fetch_and_check(url, part, params)
            break
        except DtreproError as err:
            if len(params.sources) == 1:
                raise
            failures.append(f"({i + 1}) {url}: {' '.join(str(err).split())}")
            tqdm.write(f"download: {url} failed" + ("; trying the next source" if i + 1 < len(params.sources) else ""))
    else:
        _discard(part)
        raise DtreproError(
            f"No source could provide {params.dataset}; tried, in order: {' '.join(failures)} "
            f"Add a mirror that holds D4RL's files under the same paths to data.mirrors. {OFFLINE_ADVICE}"
        )
    write_sidecar(output, digest)
    os.replace(part, output)
    part_source(part).unlink(missing_ok=True)
    return digest, url


def download_to_files(
    params: DownloadParams, output: str | os.PathLike, policy_path: str | os.PathLike, metrics_path: str | os.PathLike
) -> dict:
    """The `source` stage's outputs for a download: the file, a note on its behaviour policy, and metrics."""
    digest, url = download(params, output)
    write_json(
        policy_path,
        {
            "source": "download",
            "url": url,
            "policy": None,
            "note": "D4RL does not distribute the policies that collected its datasets.",
        },
    )
    metrics = {
        "source": "download",
        "dataset": params.dataset,
        "url": url,
        "bytes": Path(output).stat().st_size,
        "sha256": digest,
        "sha256_checked": params.expected[1] is not None,
    }
    write_json(metrics_path, metrics)
    return metrics
