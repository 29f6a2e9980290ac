"""The README's walk-through ("## Calling every function") run as written, in order, on a fresh `make run`.

Every curl line of its bash block (continuation lines joined) is run with the curl binary against a `make run`
started here with a new data directory (so the ids a fresh database gives are the README's), its real Kafka
and Memcached, on free ports: `localhost:<contract port>` becomes that service's port here. Each must answer
2xx, and what its comment promises: a leading status (`# 204`) is that status, a leading JSON value
(`# {"order_id": 1}: …`) is the answer's JSON exactly. A comment starting "after a moment" marks an answer
that depends on events (asynchronous): that command is repeated, bounded, until it answers something
non-empty.
`make …` lines are skipped; any other command is a failure (the test would not be running the whole block).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions import table
from functions.devserver import ROOT
from shared_lib.devtools import kafka_server, memcached_server
from tests.e2e.test_make_run import RunningShop, assert_stopped, family, start, stop
from tests.fixtures.required import missing
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

SECTION = "## Calling every function"
AFTER_A_MOMENT = "after a moment"
CONTRACT_PORTS = {s.port: name for name, s in table.SERVICES.items()}


@dataclass(frozen=True)
class Step:
    line: str  # as the README writes it (continuations joined)
    argv: list[str]  # the command without its comment
    comment: str

    @property
    def waits(self) -> bool:
        return self.comment.lower().startswith(AFTER_A_MOMENT)

    def promised_status(self) -> int | None:
        match = re.match(r"(\d{3})\b", self._promise())
        return int(match.group(1)) if match else None

    def promised_json(self) -> Any:
        """The JSON value the comment starts with (after any status); None when it starts with none."""
        promise = re.sub(r"^\d{3}\b[,:]?\s*", "", self._promise())
        if not promise.startswith(("{", "[")):
            return None
        try:
            value, _ = json.JSONDecoder().raw_decode(promise)
        except ValueError:
            return None  # a description such as {"published": N}
        return value

    def _promise(self) -> str:
        text = self.comment
        if self.waits:
            text = text[len(AFTER_A_MOMENT) :].lstrip(" :")
        return text.strip()


def walkthrough(readme: str) -> list[str]:
    """The command lines of the bash block under SECTION, continuation lines joined, comment lines dropped."""
    section = readme.split(f"\n{SECTION}\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = (line.strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def parse(line: str, offset: int) -> Step | None:
    """The step a README line is, its contract ports moved by `offset`; None for `make` lines."""
    lexer = shlex.shlex(line, posix=False)  # keeps the quotes: a quoted '#' starts no comment
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = list(lexer)
    if words[0] == "make":
        return None
    assert words[0] == "curl", f"the walk-through has a command this test does not run: {line}"
    bare = next((i for i, word in enumerate(words) if word.startswith("#")), len(words))
    command = re.sub(r"\blocalhost:(\d+)", lambda m: _moved(m, offset, line), " ".join(words[:bare]))
    comment = " ".join(words[bare:]).lstrip("#").strip()
    return Step(line, shlex.split(command), comment)


def _moved(match: re.Match[str], offset: int, line: str) -> str:
    port = int(match.group(1))
    assert port in CONTRACT_PORTS, f"{line}: port {port} is none of the shop's {sorted(CONTRACT_PORTS)}"
    return f"127.0.0.1:{port + offset}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: str
    body: str


def run_curl(argv: list[str]) -> Answer:
    """Run the README's curl with the status written last (our -w wins over the README's own)."""
    result = subprocess.run(
        [*argv, "--max-time", "60", "-w", "\n%{http_code}"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"curl failed ({result.returncode}): {result.stderr.decode()}"
    output, _, status = result.stdout.rpartition(b"\n")  # bytes: text mode would turn CRLF into LF
    headers = b""
    if output.startswith(b"HTTP/"):  # -i: the headers, a blank line, the body
        headers, blank, output = output.partition(b"\r\n\r\n")
        assert blank, f"no blank line after the headers: {result.stdout!r}"
    return Answer(int(status), headers.decode(), output.decode())


def non_empty(answer: Answer) -> bool:
    """Whether a JSON answer has something in it: each of its lists non-empty (e.g. notifications' items)."""
    try:
        value = json.loads(answer.body)
    except ValueError:
        return bool(answer.body.strip())
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        return bool(value) and all(lists)
    return bool(value)


def answered(argv: list[str]) -> Answer | None:
    """The answer when it is a 2xx with something in it, else None (its events not handled yet)."""
    answer = run_curl(argv)
    return answer if 200 <= answer.status < 300 and non_empty(answer) else None


@pytest.fixture
def fresh_shop(tmp_path: Path) -> Iterator[RunningShop]:
    """`make run` on a new data directory (fresh databases) with its real Kafka and Memcached, on free ports;
    stopped with Ctrl-C at the end, leaving none of its processes."""
    if shutil.which("curl") is None:
        missing("curl", "the README's walk-through is curl commands")
    for ok, why in (kafka_server.available(), memcached_server.available()):
        if not ok:
            missing("Kafka or Memcached for make run", why)
    root = Path(tempfile.mkdtemp(prefix="shop-readme-"))  # reachable by PostgreSQL's user under root
    try:
        shop = start(root / "data", tmp_path / "run.log", real_infrastructure=True)
        processes = family(shop.process.pid)
        try:
            yield shop
        finally:
            processes |= family(shop.process.pid)
            assert stop(shop.process) == 0
            assert_stopped(shop, processes, root / "data" / "pg")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_readme_walkthrough_succeeds_in_order_on_a_fresh_shop(fresh_shop: RunningShop) -> None:
    lines = walkthrough((ROOT / "README.md").read_text())
    steps = [step for line in lines if (step := parse(line, fresh_shop.ports["offset"])) is not None]
    assert len(steps) >= 15, f"the walk-through lost its commands: {lines}"
    called = {CONTRACT_PORTS[int(p)] for line in lines for p in re.findall(r"\blocalhost:(\d+)", line)}
    assert called == set(table.SERVICES), f"the walk-through calls no {set(table.SERVICES) - called}"
    for step in steps:
        if step.waits:
            answer = wait_for(
                functools.partial(answered, step.argv),
                timeout=60,
                interval=0.2,
                what=f"a non-empty answer to {step.line}",
            )
        else:
            answer = run_curl(step.argv)
        assert 200 <= answer.status < 300, f"{step.line}\nanswered {answer.status}: {answer.body}"
        if (status := step.promised_status()) is not None:
            assert answer.status == status, f"{step.line}\nanswered {answer.status}, not {status}"
        if (promised := step.promised_json()) is not None:
            assert json.loads(answer.body) == promised, f"{step.line}\nanswered {answer.body}"
