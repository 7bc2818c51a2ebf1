"""A small product read service for the LRU-cache experiment: something real for k6 to measure.

Without `--cache` every `GET /products/{id}` pays a database-like delay (`--delay-ms`, with a little jitter,
the way a query on a busy database varies); with `--cache` reads go through an in-memory LRU cache, so after a
warm-up they cost nothing but the HTTP round trip. That difference is what the demo's baseline and cached k6
runs record.

    python scripts/product_service.py [--port 3000] [--host 127.0.0.1] [--cache] [--cache-size 1024]
                                      [--delay-ms 25] [--jitter-ms 5]

`GET /products` lists the first products (each read like one product). Every product answer says
`X-Cache: HIT` when the cache served it, else `MISS` (a list: HIT only when every item was a hit), which the
k6 scenario records as its custom Rate `cache_hit_rate`. `GET /health` answers with the cache's hit and miss
counts. A ready line is printed at start.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LIST_SIZE = 5  # GET /products: the first products of the catalog
PRODUCT_PATH = re.compile(r"^/products/([A-Za-z0-9_-]{1,64})/?$")
CATEGORIES = ("books", "games", "garden", "kitchen", "music", "outdoor", "toys")


class ProductStore:
    """Stands in for the database: deterministic products, each read costing `delay_ms` +- `jitter_ms`."""

    def __init__(self, delay_ms: float, jitter_ms: float) -> None:
        self.delay_ms = delay_ms
        self.jitter_ms = jitter_ms
        self.reads = 0
        self._lock = threading.Lock()

    def load(self, product_id: str) -> dict[str, Any]:
        delay = max(0.0, self.delay_ms + random.uniform(-self.jitter_ms, self.jitter_ms))
        time.sleep(delay / 1000)
        with self._lock:
            self.reads += 1
        digest = int(hashlib.sha256(product_id.encode()).hexdigest(), 16)
        return {
            "id": product_id,
            "name": f"Product {product_id}",
            "category": CATEGORIES[digest % len(CATEGORIES)],
            "price": round(5 + (digest % 49_500) / 100, 2),
            "currency": "EUR",
            "stock": digest % 250,
            "updatedAt": "2025-11-01T12:00:00Z",
        }


class Catalog:
    """The read path the experiment varies: straight to the store, or through an LRU cache in front of it."""

    def __init__(self, store: ProductStore, cache_size: int | None) -> None:
        self.store = store
        self.cached = cache_size is not None
        self._lock = threading.Lock()
        self._read: Callable[[str], dict[str, Any]] = (
            lru_cache(maxsize=cache_size)(store.load) if cache_size is not None else store.load
        )

    def get(self, product_id: str) -> tuple[dict[str, Any], bool]:
        """The product, and whether the cache answered (the `X-Cache: HIT|MISS` header)."""
        if not self.cached:
            return self._read(product_id), False
        with self._lock:  # the hit count tells this read from a concurrent one
            hits = self._read.cache_info().hits  # type: ignore[attr-defined]
            product = self._read(product_id)
            return product, self._read.cache_info().hits > hits  # type: ignore[attr-defined]

    def stats(self) -> dict[str, Any]:
        info = self._read.cache_info() if self.cached else None  # type: ignore[attr-defined]
        return {
            "cache": "lru" if self.cached else "off",
            "hits": info.hits if info else 0,
            "misses": info.misses if info else 0,
            "size": info.currsize if info else 0,
            "store_reads": self.store.reads,
        }


class ProductHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: k6 reuses connections, so the measurement is the read path
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: ProductServer

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: thousands of lines per k6 run would only slow the service down."""

    def _json(self, status: int, payload: Any, cache: str | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if cache is not None:
            self.send_header("X-Cache", cache)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._json(200, {"status": "ok", **self.server.catalog.stats()})
            return
        if path.rstrip("/") == "/products":  # the list: one page of LIST_SIZE products, each read like one product
            page = [self.server.catalog.get(str(number)) for number in range(1, LIST_SIZE + 1)]
            all_hits = all(hit for _, hit in page)
            self._json(200, {"items": [product for product, _ in page]}, "HIT" if all_hits else "MISS")
            return
        m = PRODUCT_PATH.match(path)
        if not m:
            self._json(404, {"error": "not_found", "message": f"no route for GET {path}"})
            return
        found, hit = self.server.catalog.get(m.group(1))
        product = dict(found)
        product["servedAt"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._json(200, product, "HIT" if hit else "MISS")


class ProductServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # k6 opens all VUs' connections at once

    def __init__(self, address: tuple[str, int], catalog: Catalog) -> None:
        self.catalog = catalog
        super().__init__(address, ProductHandler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port (default 3000)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--cache", action="store_true", help="serve reads through an in-memory LRU cache")
    parser.add_argument("--cache-size", type=int, default=1024, help="LRU entries (default 1024)")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="cost of one store read (default 25)")
    parser.add_argument("--jitter-ms", type=float, default=5.0, help="+- random spread of it (default 5)")
    args = parser.parse_args(argv)
    if args.cache_size < 1 or args.delay_ms < 0 or args.jitter_ms < 0:
        parser.error("--cache-size must be >= 1, --delay-ms and --jitter-ms >= 0")

    store = ProductStore(args.delay_ms, args.jitter_ms)
    catalog = Catalog(store, args.cache_size if args.cache else None)
    server = ProductServer((args.host, args.port), catalog)

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    cache = f"LRU cache of {args.cache_size}" if args.cache else "no cache"
    print(
        f"Product service on http://{host}:{port} ({cache}, store delay {args.delay_ms:g}+-{args.jitter_ms:g} ms)",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
