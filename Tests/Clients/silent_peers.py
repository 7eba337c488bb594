#!/usr/bin/env python3
"""Opens connections that go silent and reports how long the server keeps each open.

Used by Tests/AlignServerTests/TLSEndToEndTests.swift against the HTTP gateway's TLS port (the
reliability harness has its own plaintext cases): a TCP connection that never starts TLS, and a
TLS connection that negotiates h2 by ALPN, sends the HTTP/2 preface and SETTINGS, then nothing
(it never answers the server's PING). Prints {"case": seconds until closed, or null} as JSON.

Usage: silent_peers.py HOST PORT [--observe SECONDS]
"""
import argparse
import json
import socket
import ssl
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def seconds_until_closed(sock: socket.socket, opened: float, observe: float):
    sock.settimeout(0.2)
    while time.monotonic() - opened < observe:
        try:
            if not sock.recv(65536):
                return round(time.monotonic() - opened, 2)
        except socket.timeout:
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return round(time.monotonic() - opened, 2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--observe", type=float, default=15)
    a = parser.parse_args()

    raw = socket.create_connection((a.host, a.port))
    raw_opened = time.monotonic()

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the peer's silence is under test, not its certificate
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(socket.create_connection((a.host, a.port)))
    alpn = tls.selected_alpn_protocol()
    tls.sendall(PREFACE + EMPTY_SETTINGS)
    tls_opened = time.monotonic()

    results = {"alpn": alpn}
    threads = [
        threading.Thread(target=lambda: results.__setitem__(
            "silent TCP, no TLS handshake", seconds_until_closed(raw, raw_opened, a.observe))),
        threading.Thread(target=lambda: results.__setitem__(
            "TLS h2, preface + SETTINGS, then silent", seconds_until_closed(tls, tls_opened, a.observe))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
