"""Where the CPU goes: py-spy samples of get_order (cache hit), create_order, warm list_cart and the bare
floor under load.

`python -m bench.profile [bare] [get_order] [create_order] [warm_list_cart]`. Each function is served as its
container serves it (functions.entrypoint, 1 worker, 16 threads) on the same setup as bench.get_order,
bench.create_order and bench.warm_list_cart;
the floor (bench/bare.py) as bench.floor serves it. --connections keep-alive clients load it while `py-spy
record` samples its gunicorn worker (and, for create_order, the outbox relay) for --seconds, only the thread
holding the GIL (`--gil`): the samples are the process's Python CPU time (system calls made without the GIL,
a socket's send, are not in them; /proc's figures are). With 16 threads mostly waiting on a queue, py-spy's
idle detection alone counts the waiting ones too. Three views of the samples: "layer" names the innermost
frame outside the standard library (gunicorn, werkzeug, flask, functions_framework, pymemcache, pg8000, kafka,
opentelemetry, prometheus_client, or the shop's own module), "leaf" the module of the innermost frame itself,
"line" the innermost non-stdlib function and line. The raw stacks stay in
bench/results/profile-<name>-<process>.txt (py-spy's collapsed format, for a flame graph tool).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench import floor, load
from bench.common import RESULTS
from bench.create_order import order, stock_up
from bench.stack import kafka_broker, memcached, postgres, sample_order, shop
from functions import devserver
from shared_lib.postgres import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent


def layer_of(filename: str) -> str | None:
    """The layer a frame's file belongs to; None for the standard library."""
    if "site-packages/" in filename:
        return "lib: " + filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT)) or filename.startswith(("functions/", "shared_lib/")):
        relative = filename.removeprefix(str(ROOT) + "/")
        parts = relative.split("/")
        if parts[0] == "shared_lib" and len(parts) > 2:
            return f"shop: shared_lib/{parts[1]}"
        return "shop: " + "/".join(parts[:3] if parts[0] == "functions" else parts[:2])
    return None


def stdlib_module(filename: str) -> str:
    if "/lib/python3" in filename:
        return "stdlib: " + filename.split("/lib/python3", 1)[1].split("/", 1)[1].split("/", 1)[
            0
        ].removesuffix(".py")
    return "stdlib: " + filename


def frame_file(frame: str) -> str:
    """py-spy's frame "function (path/to/file.py:123)" → the path."""
    if frame.endswith(")") and " (" in frame:
        return frame.rsplit(" (", 1)[1].rstrip(")").rsplit(":", 1)[0]
    return frame


def breakdown(raw: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """(samples, samples by layer, by leaf frame's module, by innermost non-stdlib function and line)."""
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = stack.split(";")
        frames = [frame_file(f) for f in raw_frames]
        total += count
        leaf = frames[-1]
        leaves[layer_of(leaf) or stdlib_module(leaf)] += count
        for filename, frame in zip(reversed(frames), reversed(raw_frames), strict=True):
            if (layer := layer_of(filename)) is not None:
                layers[layer] += count
                function, _, place = frame.rpartition(" (")
                place = place.rstrip(")").replace(str(ROOT) + "/", "").split("site-packages/")[-1]
                lines[f"{function} ({place})"] += count
                break
        else:
            layers["stdlib only (threads, selectors)"] += count
    return total, layers, leaves, lines


def print_breakdown(title: str, output: Path, top: int) -> None:
    """Print the py-spy raw stacks in `output` as shares of their samples: the `top` layers, leaf frames and
    lines."""
    total, layers, leaves, lines = breakdown(output.read_text())
    print(f"\n== {title} ({total} samples holding the GIL; raw stacks in {output})")
    for heading, counter in (("by layer", layers), ("by leaf frame", leaves), ("by line", lines)):
        print(f"  {heading}:")
        for label, count in counter.most_common(top):
            print(f"    {count / max(total, 1) * 100:5.1f}%  {label}")


def record(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", "200", "--gil", "--full-filenames", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(
    name: str, pids: dict[str, int], port: int, request: load.MakeRequest, connections: int, seconds: float
) -> None:
    RESULTS.mkdir(exist_ok=True)
    load.run(port, request, connections, 2.0)  # warm
    outputs = {part: RESULTS / f"profile-{name}-{part}.txt" for part in pids}
    spies = {part: record(pid, seconds, outputs[part]) for part, pid in pids.items()}
    loader = threading.Thread(target=load.run, args=(port, request, connections, seconds + 2))
    loader.start()
    for spy in spies.values():
        spy.wait(seconds + 60)
    loader.join()
    for part, output in outputs.items():
        print_breakdown(f"{name}: {part}", output, top=12)


@contextlib.contextmanager
def get_order_served() -> Iterator[tuple[dict[str, int], int, load.MakeRequest]]:
    with contextlib.ExitStack() as stack:
        sample = stack.enter_context(sample_order())
        environment, uid = sample.environment, sample.uid
        served = stack.enter_context(floor.function("get_order", environment))
        yield {"worker": served.workers()[0]}, served.port, load.get(f"/order/{uid}")


@contextlib.contextmanager
def create_order_served() -> Iterator[tuple[dict[str, int], int, load.MakeRequest]]:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres(durable=True))
        broker = stack.enter_context(kafka_broker())
        environment = devserver.service_environment(pg.dsn, kafka=broker.bootstrap)
        devserver.prepare_databases(pg.dsn, environment)
        loms_db = ConnectionPool(environment["LOMS_SHARD_DSNS"].split(",")[0], size=1)
        stock_up(loms_db)
        served = stack.enter_context(floor.function("create_order", environment))
        relay = floor.spawn("relay", [sys.executable, "-m", "functions.loms.relay_worker"], environment, 0)
        stack.callback(relay.stop)
        request = load.post_json("/order/create", order)
        assert load.one(served.port, request).status == 200
        deadline = (
            time.monotonic() + 120
        )  # the relay started, connected and published: its start is not profiled
        while loms_db.run("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay published nothing within 120 s")
            time.sleep(0.05)
        yield (
            {"worker": served.workers()[0], "relay": relay.pid},
            served.port,
            load.post_json("/order/create", order),
        )


@contextlib.contextmanager
def warm_list_cart_served() -> Iterator[tuple[dict[str, int], int, load.MakeRequest]]:
    """list_cart of 11 SKUs whose product info is in Memcached (bench.warm_list_cart's setup)."""
    from bench.list_cart import SKUS
    from bench.warm_list_cart import USER

    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(memcached())
        overrides = {"CART_MEMCACHED": cache.address, "PRODUCT_LATENCY_MS": "0"}
        running = stack.enter_context(shop(("product", "loms", "cart"), overrides))
        cart_port = int(running.url("cart").rsplit(":", 1)[1])
        for sku in SKUS:
            add = load.post_json(f"/user/{USER}/cart/{sku}", lambda _rng: {"count": 1})
            assert load.one(cart_port, add).status == 200, sku
        served = stack.enter_context(floor.function("list_cart", running.environment))
        request = load.get(f"/user/{USER}/cart")
        assert load.one(served.port, request).status == 200
        yield {"worker": served.workers()[0]}, served.port, request


@contextlib.contextmanager
def bare_served() -> Iterator[tuple[dict[str, int], int, load.MakeRequest]]:
    with floor.bare() as served:
        yield {"worker": served.workers()[0]}, served.port, load.get("/")


SETUPS = {
    "bare": bare_served,
    "get_order": get_order_served,
    "create_order": create_order_served,
    "warm_list_cart": warm_list_cart_served,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"of {', '.join(SETUPS)} (default: all)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in SETUPS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    for name in args.names or SETUPS:
        with SETUPS[name]() as (pids, port, request):
            profile(name, pids, port, request, args.connections, args.seconds)


if __name__ == "__main__":
    main()
