"""Debian's Firefox ESR, headless, driven over WebDriver BiDi (Firefox's own remote protocol: no geckodriver, no
Playwright build): enough to open a page and look at it."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from websockets.sync.client import connect

LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")


@contextmanager
def firefox(binary: str):
    """A headless Firefox with a fresh profile; yields `call(method, **params)`, a BiDi command's result."""
    with tempfile.TemporaryDirectory() as profile:
        log = Path(profile) / "stderr.log"
        with open(log, "w") as err:
            args = [binary, "--headless", "--no-remote", "--profile", profile, "--remote-debugging-port=0"]
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while not (found := LISTENING.search(log.read_text(errors="replace"))):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
                time.sleep(0.1)
            with connect(found.group(1) + "/session", max_size=None) as ws:
                ids = itertools.count(1)

                def call(method: str, **params):
                    ws.send(json.dumps({"id": (i := next(ids)), "method": method, "params": params}))
                    while (reply := json.loads(ws.recv())).get("id") != i:
                        pass  # an event
                    assert reply.get("type") != "error", reply
                    return reply["result"]

                call("session.new", capabilities={})
                yield call
        finally:
            proc.terminate()
            proc.wait(timeout=30)
