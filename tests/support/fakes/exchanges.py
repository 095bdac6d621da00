"""Fake Binance and KuCoin REST servers that verify request signatures like the real ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

READ_ONLY_BINANCE = {
    "ipRestrict": False,
    "createTime": 1700000000000,
    "enableReading": True,
    "enableSpotAndMarginTrading": False,
    "enableWithdrawals": False,
    "enableInternalTransfer": False,
    "enableMargin": False,
    "enableFutures": False,
    "permitsUniversalTransfer": False,
    "enableVanillaOptions": False,
    "enablePortfolioMarginTrading": False,
}


@dataclass
class FakeExchange:
    """One fake exchange account: its key, secret, passphrase and the permissions it reports."""

    api_key: str = "test-key"
    api_secret: str = "test-secret"
    passphrase: str = "test-passphrase"
    binance_flags: dict[str, Any] = field(default_factory=lambda: dict(READ_ONLY_BINANCE))
    kucoin_permission: str = "General"
    rejected: list[str] = field(default_factory=list)
    accepted: int = 0


def _binance(ex: FakeExchange, handler: BaseHTTPRequestHandler) -> tuple[int, Any]:
    url = urlsplit(handler.path)
    if url.path != "/sapi/v1/account/apiRestrictions":
        return 404, {"code": -1, "msg": "not found"}
    if handler.headers.get("X-MBX-APIKEY") != ex.api_key:
        return 401, {"code": -2015, "msg": "Invalid API-key"}
    query, _, signature = url.query.rpartition("&signature=")
    expected = hmac.new(ex.api_secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    if not signature or not hmac.compare_digest(signature, expected):
        return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
    params = dict(parse_qsl(query))
    stamp = int(params.get("timestamp", "0"))
    if abs(time.time() * 1000 - stamp) > int(params.get("recvWindow", "5000")):
        return 400, {"code": -1021, "msg": "Timestamp outside recvWindow"}
    return 200, ex.binance_flags


def _kucoin(ex: FakeExchange, handler: BaseHTTPRequestHandler) -> tuple[int, Any]:
    path = urlsplit(handler.path).path
    if path != "/api/v1/user/api-key":
        return 404, {"code": "404000", "msg": "not found"}
    h = handler.headers

    def sign(payload: str) -> str:
        return base64.b64encode(
            hmac.new(ex.api_secret.encode(), payload.encode(), hashlib.sha256).digest()
        ).decode()

    if h.get("KC-API-KEY") != ex.api_key:
        return 401, {"code": "400003", "msg": "KC-API-KEY not exists"}
    if h.get("KC-API-KEY-VERSION") != "2":
        return 401, {"code": "400004", "msg": "Invalid KC-API-KEY-VERSION"}
    if not hmac.compare_digest(h.get("KC-API-PASSPHRASE", ""), sign(ex.passphrase)):
        return 401, {"code": "400004", "msg": "Invalid KC-API-PASSPHRASE"}
    stamp = h.get("KC-API-TIMESTAMP", "")
    if not stamp.isdigit() or abs(time.time() * 1000 - int(stamp)) > 5000:
        return 401, {"code": "400002", "msg": "KC-API-TIMESTAMP Invalid"}
    expected = sign(f"{stamp}{handler.command}{handler.path}")
    if not hmac.compare_digest(h.get("KC-API-SIGN", ""), expected):
        return 401, {"code": "400005", "msg": "Invalid KC-API-SIGN"}
    return 200, {
        "code": "200000",
        "data": {
            "apiKey": ex.api_key,
            "apiVersion": 2,
            "permission": ex.kucoin_permission,
            "remark": "fake",
            "isMaster": True,
        },
    }


@contextmanager
def fake_exchange(kind: str, ex: FakeExchange) -> Iterator[str]:
    """Serve `kind` ("binance" or "kucoin") for `ex` on loopback; yields the base URL."""
    route = _binance if kind == "binance" else _kucoin

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

        def do_GET(self) -> None:  # noqa: N802
            status, body = route(ex, self)
            if status == 200:
                ex.accepted += 1
            else:
                ex.rejected.append(str(body))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
