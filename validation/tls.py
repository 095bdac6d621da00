"""TLS handshakes for the protocol and certificate checks (stdlib ssl over asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Handshake:
    version: str
    cipher: str
    cert: dict[str, Any]


async def handshake(
    host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float
) -> Handshake:
    """Open a TLS connection, report what was negotiated, and close it."""
    async with asyncio.timeout(timeout):
        _reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=server_name)
    try:
        obj = writer.get_extra_info("ssl_object")
        version = obj.version() or "" if obj is not None else ""
        cipher = (obj.cipher() or ("",))[0] if obj is not None else ""
        cert = (obj.getpeercert() or {}) if obj is not None else {}
        return Handshake(version=version, cipher=cipher, cert=dict(cert))
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass


def legacy_context() -> ssl.SSLContext:
    """A client that offers only TLS 1.0/1.1, to prove the server refuses them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated on purpose: offering them is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def unverified_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
