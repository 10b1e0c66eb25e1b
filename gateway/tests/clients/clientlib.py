"""What the client scripts of gateway/tests/python_clients.rs share:
progress lines, checks, deadlines, waiting on a /metrics gauge, the
diff-depth continuity rule, and the ccxt options. The scripts import it
from their own directory (Python puts a script's directory on sys.path).
"""

import asyncio
import json
import sys
import threading
import time
import traceback
import urllib.request

DEADLINE_S = 20
_STARTED = time.monotonic()


def step(what):
    """Progress on stderr (shown by the Rust side when a check fails)."""
    print(f"[{time.monotonic() - _STARTED:6.2f}s] {what}", file=sys.stderr, flush=True)


def script_main(body):
    """Run body(BASE_URL, WS_URL, KEY_A, SECRET_A, KEY_B, SECRET_B) from
    the command line; on any failure print the traceback and exit 1."""
    try:
        body(*sys.argv[1:7])
        step("done")
    except Exception:
        traceback.print_exc()
        sys.exit(1)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def gauge(base, name):
    """A gauge of the server's /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def until_gauge(base, name, at_least):
    """Wait (deadline, 20 ms polls) until gauge `name` is at least
    `at_least`: how a script knows its stream subscriptions are in place
    when its library does not wait for SUBSCRIBE replies."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while (v := await asyncio.to_thread(gauge, base, name)) < at_least:
        check(loop.time() < end, f"{name} stayed at {v}, wanted {at_least}")
        await asyncio.sleep(0.02)


def diffs_continue(diffs, last_update_id):
    """Binance's local-book rule over diff-depth events (dicts with U, u):
    drop those with u <= the REST snapshot's id; the first kept one spans
    id + 1; each next U is the previous u + 1. Returns (kept, last u)."""
    last = last_update_id
    kept = [d for d in diffs if d["u"] > last]
    check(kept and kept[0]["U"] <= last + 1 <= kept[0]["u"],
          f"first diff {kept[:1]} does not span {last + 1}")
    for i, d in enumerate(kept):
        check(i == 0 or d["U"] == last + 1, f"gap before {d} (last u {last})")
        last = d["u"]
    return kept, last


def ccxt_config(key, secret, base):
    """ccxt's binance options for a spot-only exchange (BINANCE_NOTES), and
    the URL edit of its REST endpoints: (constructor config, urls edit)."""
    config = {
        "apiKey": key,
        "secret": secret,
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
        },
    }

    def point(ex):
        ex.urls["api"]["public"] = base + "/api/v3"
        ex.urls["api"]["private"] = base + "/api/v3"
        return ex

    return config, point


class Inbox:
    """Messages from a client library's threads, with waiting under a
    deadline."""

    def __init__(self):
        self.cond = threading.Condition()
        self.msgs = []
        self.errors = []

    def on_message(self, _manager, raw):
        with self.cond:
            self.msgs.append(json.loads(raw))
            self.cond.notify_all()

    def on_error(self, _manager, err):
        with self.cond:
            self.errors.append(repr(err))
            self.cond.notify_all()

    def wait(self, what, pred, timeout=DEADLINE_S):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                found = pred(self.msgs)
                if found:
                    return found
                check(not self.errors, f"client error while waiting for {what}: {self.errors}")
                left = end - time.monotonic()
                check(left > 0, f"timed out waiting for {what}; got {self.msgs[-20:]}")
                self.cond.wait(left)
