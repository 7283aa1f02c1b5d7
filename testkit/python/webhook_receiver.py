"""A webhook receiver for Nexus's tests that verifies every delivery with the
`standardwebhooks` library (the Standard Webhooks reference implementation,
independent of Nexus).

It listens on 127.0.0.1, port 0, prints the port, and serves until its stdin
closes (the test ended or was killed). Endpoints are `/hooks/<name>`; the
test configures each name with `POST /__config/<name>`:

    {"secret": "whsec_…", "mode": "ok" | "down" | "slow" | "redirect" | "hold",
     "delay": seconds (slow), "location": url (redirect)}

* ok: verifies, records, answers 204 (a delivery that fails verification is
  recorded with verified=false and answered 400);
* down: records and answers 503 (verification still runs and is recorded);
* slow: sleeps `delay` seconds, then behaves as ok;
* redirect: answers 302 to `location`;
* hold: keeps the request open until `POST /__release` (or 60 s), noticing
  when the sender goes away meanwhile (recorded as abandoned); then ok;
* hold_down: like hold, then answers 503.

`GET /__log/<name>` returns what `<name>` received, in order. `POST /__offset`
`{"secs": n}` tells the verifier that the sender's clock is n seconds ahead:
tests move Nexus's clock by a day to reach retries, and the library checks
`webhook-timestamp` against its own `datetime.now()`; the offset is applied
to that clock only — signature checks are the library's, unchanged.
"""

import json
import select
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks.webhooks as swh

LOCK = threading.Lock()
CONFIG = {}
LOG = {}
OFFSET = [0.0]
RELEASE = threading.Event()
HOLD_LIMIT = 60.0


class ShiftedDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(seconds=OFFSET[0])


swh.datetime = ShiftedDatetime


def peer_gone(sock):
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/__log/"):
            name = self.path[len("/__log/"):]
            with LOCK:
                body = json.dumps(LOG.get(name, [])).encode()
            return self.reply(200, body, [("Content-Type", "application/json")])
        self.reply(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path.startswith("/__config/"):
            with LOCK:
                CONFIG[self.path[len("/__config/"):]] = json.loads(body)
            return self.reply(204)
        if self.path == "/__offset":
            OFFSET[0] = float(json.loads(body)["secs"])
            return self.reply(204)
        if self.path == "/__release":
            RELEASE.set()
            return self.reply(204)
        if self.path == "/__hold":
            RELEASE.clear()
            return self.reply(204)
        if not self.path.startswith("/hooks/"):
            return self.reply(404)
        name = self.path[len("/hooks/"):]
        with LOCK:
            cfg = dict(CONFIG.get(name, {}))
        entry = {
            "webhook_id": self.headers.get("webhook-id"),
            "timestamp": self.headers.get("webhook-timestamp"),
            "content_type": self.headers.get("content-type"),
            "user_agent": self.headers.get("user-agent"),
            "received_at": time.time(),
            "verified": False,
            "error": None,
            "payload": None,
            "answered": None,
            "abandoned": False,
        }
        try:
            entry["payload"] = swh.Webhook(cfg.get("secret", "")).verify(body, dict(self.headers))
            entry["verified"] = True
        except Exception as e:  # recorded: the test fails on any unverified delivery
            entry["error"] = f"{type(e).__name__}: {e}"
        with LOCK:
            LOG.setdefault(name, []).append(entry)
        mode = cfg.get("mode", "ok")
        if mode == "slow":
            time.sleep(float(cfg.get("delay", 1)))
        if mode in ("hold", "hold_down"):
            deadline = time.time() + HOLD_LIMIT
            while not RELEASE.wait(0.05) and time.time() < deadline:
                if peer_gone(self.connection):
                    with LOCK:
                        entry["abandoned"] = True
                    self.close_connection = True
                    return
        if mode == "redirect":
            status, headers = 302, [("Location", cfg.get("location", "http://127.0.0.1:9/"))]
        elif mode in ("down", "hold_down"):
            status, headers = 503, []
        elif not entry["verified"]:
            status, headers = 400, []
        else:
            status, headers = 204, []
        with LOCK:
            entry["answered"] = status
        try:
            self.reply(status, b"", headers)
        except OSError:
            with LOCK:
                entry["abandoned"] = True


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
