"""`python -m backends.local.demo_service --mode MODE --port N`: small services for `fsm demo`.

healthy: answers GET /health with 200 until stopped.   crash: answers, then exits 1.
silent: runs but never listens.                        flappy: alternates 200 and 503.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

MODES = ("healthy", "crash", "silent", "flappy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--boot", type=float, default=1.0, help="seconds before answering")
    parser.add_argument("--crash-after", type=float, default=6.0)
    parser.add_argument("--flap-every", type=float, default=3.0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    time.sleep(args.boot)
    if args.mode == "silent":
        stop.wait()
        return 0

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            up = True
            if args.mode == "flappy":
                up = int((time.monotonic() - started) / args.flap_every) % 2 == 0
            self.send_response(200 if up else 503)
            self.end_headers()
            self.wfile.write(b"ok\n" if up else b"down\n")

        def log_message(self, format: str, *a: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if args.mode == "crash":
        stop.wait(max(0.0, args.crash_after - (time.monotonic() - started)))
        if not stop.is_set():
            print("demo service: simulated crash", file=sys.stderr)
            return 1
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
