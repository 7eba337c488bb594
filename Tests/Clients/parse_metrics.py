#!/usr/bin/env python3
"""Scrapes a Prometheus text exposition and parses it with prometheus_client's own parser.

Used by Tests/AlignServerTests/MetricsEndToEndTests.swift: the server's GET /metrics must be
readable by the reference parser, and the test then checks series and values from the JSON this
prints on stdout:

    {"content_type": "...", "families": [{"name": ..., "type": ..., "samples":
        [{"name": ..., "labels": {...}, "value": ...}]}]}

prometheus_client names a counter family without its `_total` suffix; sample names are kept as
exposed. Non-finite values are written as the strings "NaN", "+Inf", "-Inf".

Usage: parse_metrics.py URL            (GET with urllib, optional --bearer KEY)
       parse_metrics.py --file PATH    (a saved exposition, "-" for stdin)
Exit status 1 with the parser's error on stderr when the text does not parse.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fetch(url: str, bearer: str | None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode("utf-8"), response.headers.get("Content-Type", "")


def number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def parse(text: str) -> list[dict]:
    families = []
    for family in text_string_to_metric_families(text):
        families.append({
            "name": family.name,
            "type": family.type,
            "samples": [
                {"name": s.name, "labels": dict(s.labels), "value": number(s.value)} for s in family.samples
            ],
        })
    return families


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--file")
    parser.add_argument("--bearer")
    args = parser.parse_args()
    if (args.url is None) == (args.file is None):
        parser.error("give a URL or --file")
    if args.file is not None:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        content_type = ""
    else:
        text, content_type = fetch(args.url, args.bearer)
    try:
        families = parse(text)
    except Exception as error:  # the parser raises ValueError and friends on malformed input
        print(f"the exposition does not parse: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    json.dump({"content_type": content_type, "families": families}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
