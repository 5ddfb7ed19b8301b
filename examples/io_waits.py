"""I/O-bound work on threads: eight requests to a slow web server take
about as long as one when eight threads wait for them at once.

A local server (started here, so nothing leaves this machine) answers each
request after ``--delay`` seconds. The requests run serially, on a
``shoal.ThreadPool(8)``, and with ``backend="auto"``, which sees that the
function mostly waits and picks threads.

    python examples/io_waits.py [--requests 8] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import http.server
import threading
import time
import urllib.request

import shoal


def slow_server(delay: float) -> http.server.ThreadingHTTPServer:
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            time.sleep(delay)
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per answer")
    args = parser.parse_args(argv)
    server = slow_server(args.delay)
    host, port = server.server_address
    urls = [f"http://{host}:{port}/page/{i}" for i in range(args.requests)]
    expected = [f"/page/{i}" for i in range(args.requests)]
    print(f"{args.requests} requests, each answered after {args.delay} s")

    started = time.perf_counter()
    assert [fetch(u) for u in urls] == expected
    print(f"  serial                 {time.perf_counter() - started:5.2f} s")

    with shoal.ThreadPool(args.requests) as pool:
        started = time.perf_counter()
        assert pool.map(fetch, urls) == expected
        print(f"  ThreadPool({args.requests})          {time.perf_counter() - started:5.2f} s")

    started = time.perf_counter()
    assert shoal.map(fetch, urls, workers=args.requests, backend="auto") == expected
    print(f"  backend='auto'         {time.perf_counter() - started:5.2f} s")
    print(f"auto chose {shoal.last_choice()}")
    server.shutdown()


if __name__ == "__main__":
    main()
