"""Starts and stops a local Apache Kafka broker (KRaft, one node, on 127.0.0.1) for `make run` and the tests.

The real broker: kafka_2.13's runtime jars, resolved by Maven from kafka/pom.xml into a cache kept between
runs. Needs java (17+) on PATH, and mvn the first time. No topic or service knowledge here.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

KAFKA_VERSION = "4.1.1"  # keep in step with kafka/pom.xml
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
MARKER = ".complete"  # written last into the jar cache: holds the digest of the pom it was resolved from

LOG4J2_PROPERTIES = """\
# The broker logs to stdout, which kafka_server.py sends to the data directory's broker.log.
status = warn
appender.stdout.type = Console
appender.stdout.name = stdout
appender.stdout.target = SYSTEM_OUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = stdout
loggers = config, storage, log, state, raft, metadata, image, controller, coordinator
# every client and the broker print their whole configuration on start: hundreds of lines each
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
logger.storage.name = org.apache.kafka.storage
logger.storage.level = warn
logger.log.name = kafka.log
logger.log.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.raft.name = org.apache.kafka.raft
logger.raft.level = warn
logger.metadata.name = org.apache.kafka.metadata
logger.metadata.level = warn
logger.image.name = org.apache.kafka.image
logger.image.level = warn
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
logger.coordinator.name = org.apache.kafka.coordinator
logger.coordinator.level = warn
"""


def cache_dir() -> Path:
    """Where the broker's jars are kept between runs: ${XDG_CACHE_HOME:-~/.cache}/knative-shop/kafka-<v>/."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "knative-shop" / f"kafka-{KAFKA_VERSION}"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_cached(directory: Path | None = None) -> bool:
    """True when `directory` holds a complete resolution of the current pom (its marker matches)."""
    marker = (directory or cache_dir()) / MARKER
    try:
        return marker.read_text().strip() == _pom_digest()
    except OSError:
        return False


def resolve_jars(directory: Path | None = None) -> Path:
    """The directory of the broker's runtime jars, resolved by Maven unless already complete there.

    Resolution goes to a private sibling directory renamed into place at the end, so an interrupted or
    concurrent run never leaves a half-filled cache behind a marker.
    """
    target = directory or cache_dir()
    if jars_cached(target):
        return target
    if shutil.which("mvn") is None:
        raise RuntimeError(f"the Kafka jars are not in {target} and mvn is not on PATH to resolve them")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f"{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"Maven could not resolve the Kafka jars:\n{result.stdout[-3000:]}")
    (partial / MARKER).write_text(_pom_digest() + "\n")
    if jars_cached(target):  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)  # an incomplete or outdated resolution
    try:
        partial.rename(target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not jars_cached(target):
            raise
    return target


def available() -> tuple[bool, str]:
    """Whether a broker can be started here, and if not, why."""
    if shutil.which("java") is None:
        return False, "java is not on PATH (Kafka 4.1 needs a Java 17+ runtime)"
    if jars_cached():
        return True, f"java on PATH, jars cached in {cache_dir()}"
    if shutil.which("mvn") is None:
        return False, f"mvn is not on PATH and the Kafka jars are not cached in {cache_dir()}"
    return True, "java and mvn on PATH"


def topic_size(bootstrap: str, topic: str) -> int:
    """How many records a Kafka topic holds (the sum of its partitions' end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """A live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class KafkaServer:
    data_dir: Path
    port: int
    controller_port: int
    heap_mb: int = 512
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def _properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _log_dirs(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def _config(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self._log_dirs),
            "num.partitions": "1",
            # topics are declared (functions/table.py), as in the cluster: a misspelt one fails loudly
            "auto.create.topics.enable": "false",
            # one node: every internal topic has one replica; one partition each keeps start-up quick
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _java(self, jars: Path, main_class: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseSerialGC",  # two cores and a small heap: the cheapest collector to start
            "-XX:TieredStopAtLevel=1",  # C1 only: the broker is up a second sooner, fast enough for a dev box
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{jars}/*",
            main_class,
            *args,
        ]

    def _prepare(self, jars: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._properties.write_text(self._config())
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if (self._log_dirs / "meta.properties").exists():
            return  # formatted once: a restart keeps topics, records and committed offsets
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # `--cluster-id=`: an id may start with "-", which `-t <id>` would read as an option (1 start in 64)
        format_args = ("format", f"--cluster-id={cluster_id}", "-c", str(self._properties))
        result = subprocess.run(
            self._java(jars, "kafka.tools.StorageTool", *format_args),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka's storage failed:\n{result.stdout[-3000:]}")

    def _pid(self) -> int | None:
        """The broker's pid when it is running from this data directory: started here, by the CLI, or by hand
        (found by its command line, then remembered in the pid file, so stop() ends it too)."""
        if self._process is not None:
            if self._process.poll() is None:
                return self._process.pid
            self._process = None
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and self._ours(pid):
            return pid
        found = self._find()
        if found is not None:
            with contextlib.suppress(OSError):
                self._pid_file.write_text(f"{found}\n")
        return found

    def _ours(self, pid: int) -> bool:
        """A live process running a broker with this directory's properties (not a reused pid)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self._properties).encode() in cmdline and _alive(pid)

    def _find(self) -> int | None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._ours(int(entry.name)):
                return int(entry.name)
        return None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else None."""
        return self._pid()

    def running(self) -> bool:
        return self._pid() is not None

    def kill(self) -> None:
        """SIGKILL the broker as a crash would (fault tests): no clean shutdown; start() recovers its logs."""
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 10.0)
        self._process = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker (resolving jars and formatting storage first if needed); return once it serves
        metadata. RuntimeError with the log's tail when it does not come up in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        if not self.running():
            jars = resolve_jars()
            self._prepare(jars)
            with open(self.log_file, "ab") as log:
                log.write(f"--- starting Kafka {KAFKA_VERSION} at {time.strftime('%F %T')}\n".encode())
                log.flush()
                self._process = subprocess.Popen(
                    self._java(jars, "kafka.Kafka", str(self._properties)),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    start_new_session=True,  # a Ctrl-C meant for `make run` or pytest reaches it via stop()
                )
            self._pid_file.write_text(f"{self._process.pid}\n")
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        last_error = "the port never opened"
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"Kafka exited during start-up:\n{self._log_tail()}")
            if _port_open(self.port):
                try:
                    if self._serves_metadata():
                        return
                    last_error = "no broker registered yet"
                except Exception as exc:  # any client error means "not ready yet"
                    last_error = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"Kafka did not become ready ({last_error}):\n{self._log_tail()}")

    def _serves_metadata(self) -> bool:
        with self._admin(timeout=2.0) as admin:
            return bool(admin.describe_cluster()["brokers"])

    @contextlib.contextmanager
    def _admin(self, timeout: float) -> Iterator[Any]:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="shop-devtools",
            request_timeout_ms=int(timeout * 1000),
            bootstrap_timeout_ms=int(timeout * 1000),
            reconnect_backoff_max_ms=500,
        )
        try:
            yield admin
        finally:
            admin.close()

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def create_topics(self, topics: Mapping[str, int], timeout: float = 30.0) -> None:
        """Create each topic (name -> partitions, one replica) unless it exists; return once every partition
        has a leader. An existing topic is left as it is, whatever its partition count."""
        if not topics:
            return
        import kafka.errors

        with self._admin(timeout=timeout) as admin:
            result = admin.create_topics(
                {name: {"num_partitions": n, "replication_factor": 1} for name, n in topics.items()},
                timeout_ms=int(timeout * 1000),
                raise_errors=False,
            )
            failed = [
                f"{t['name']}: {t.get('error_message') or t['error_code']}"
                for t in result["topics"]
                if t["error_code"] not in (0, kafka.errors.TopicAlreadyExistsError.errno)
            ]
            if failed:
                raise RuntimeError("creating Kafka topics failed: " + "; ".join(failed))
            admin.wait_for_topics(list(topics), timeout_ms=int(timeout * 1000))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown keeps restarts quick), then SIGKILL if it is not gone in `timeout`."""
        pid = self._pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10.0)
        self._process = None
        self._pid_file.unlink(missing_ok=True)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout)  # reaps it, so no zombie is left behind
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.05)
        return False


def _topic_arg(text: str) -> tuple[str, int]:
    name, _, partitions = text.partition(":")
    return name, int(partitions or "1")


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status", "resolve"])
    parser.add_argument("--data", type=Path, default=Path(".local/kafka"))
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--controller-port", type=int, default=None, help="default: --port + 1")
    parser.add_argument(
        "--topic", action="append", type=_topic_arg, default=[], help="NAME:PARTITIONS to create on start"
    )
    args = parser.parse_args(argv)
    if args.action == "resolve":
        print(resolve_jars(), file=out)
        return 0
    server = KafkaServer(args.data, args.port, args.controller_port or args.port + 1)
    if args.action == "start":
        server.start()
        server.create_topics(dict(args.topic))
        print(server.bootstrap, file=out)
    elif args.action == "stop":
        server.stop()
    else:
        print("running" if server.running() else "stopped", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
