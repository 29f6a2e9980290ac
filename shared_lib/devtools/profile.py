"""`python -m shared_lib.devtools.profile URL --token T --seconds 10 -o profile.json`: fetch a profile from a
running function's /debug/profile (shared_lib.observability.profiling) to a file."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

from shared_lib.observability.profiling import FORMATS, PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch a profile from a running function's /debug/profile")
    parser.add_argument("url", help="the function's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", required=True, help="SHOP_PROFILING_TOKEN of the function")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--format", choices=sorted(FORMATS), default="speedscope")
    parser.add_argument("--host", help="Host header (a function behind the cluster's ingress)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    url = f"{args.url.rstrip('/')}{PATH}?seconds={args.seconds}&format={args.format}"
    headers = {"Authorization": f"Bearer {args.token}"}
    if args.host:
        headers["Host"] = args.host
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.seconds + 60) as response:
            args.output.write_bytes(response.read())
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
