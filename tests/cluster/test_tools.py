"""The autoscale demo runs bounded, stops by itself, and refuses any address but loopback."""

from __future__ import annotations

import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from k8s.tools import autoscale_demo


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: object, client_address: object) -> None:
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request: object, client_address: object) -> None:
        try:
            self.finish_request(request, client_address)  # type: ignore[arg-type]
        finally:
            self.shutdown_request(request)  # type: ignore[arg-type]


@pytest.fixture
def product_stub() -> Iterator[tuple[str, list[str]]]:
    """A stand-in for the function on 127.0.0.1: answers 200 and records the Host headers it saw."""
    hosts: list[str] = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        hosts.append(str(environ.get("HTTP_HOST")))
        start_response("200 OK", [("Content-Type", "application/json")])  # type: ignore[operator]
        return [b'{"sku": 1076963}']

    server = make_server("127.0.0.1", 0, app, server_class=ThreadingServer, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hosts
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:31080", "http://192.168.1.5", "http://example.com:31080", "https://127.0.0.1"]
)
def test_only_loopback_is_a_target(url: str) -> None:
    with pytest.raises(ValueError):
        autoscale_demo.loopback_address(url)
    with pytest.raises(SystemExit):
        autoscale_demo.main(["--ingress", url, "--no-kubectl"])


def test_loopback_addresses_are_accepted() -> None:
    assert autoscale_demo.loopback_address("http://127.0.0.1:31080") == ("127.0.0.1", 31080)
    assert autoscale_demo.loopback_address("http://localhost") == ("localhost", 80)


def test_the_demo_loads_through_the_ingress_host_and_stops_once_the_pods_are_gone(
    product_stub: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, hosts = product_stub
    kubectl = tmp_path / "kubectl"  # a cluster with no pods left for the function
    kubectl.write_text(f"#!{sys.executable}\n")
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    argv = ["--ingress", url, "--kubectl", str(kubectl), "--concurrency", "4"]
    assert autoscale_demo.main([*argv, "--load-seconds", "1.5", "--idle-seconds", "30"]) == 0
    out = capsys.readouterr().out
    assert "product-get-product scaled to zero" in out
    assert set(hosts) == {"product-get-product.shop.127.0.0.1.sslip.io"}
    assert " load " in out and " idle " in out


def test_without_a_cluster_it_stops_after_its_bounds(
    product_stub: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, hosts = product_stub
    argv = ["--ingress", url, "--direct", "--no-kubectl", "--load-seconds", "1", "--idle-seconds", "1"]
    assert autoscale_demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "pods not watched" in out
    assert hosts and all(h.startswith("127.0.0.1:") for h in hosts)
