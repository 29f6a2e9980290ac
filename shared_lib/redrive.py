"""`python -m shared_lib.redrive --bootstrap HOST:PORT --topic loms.order-events.dlq [--dry-run]`: dead
letters back to where they came from.

Republishes each dead letter of a dead-letter topic to its `source_topic` with its key, bytes and original
headers (the dead-letter annotations dropped), and commits its progress in the consumer group
`redrive.<dead-letter topic>`, so a second redrive of the same topic republishes nothing again (and the
consumers deduplicate by event id anyway). An envelope (a record too large to have been copied whole) cannot
be replayed: it is listed, never republished. `--dry-run` lists each letter (reason, source partition and
offset) and changes nothing. Runs in the cluster image as well as on a dev machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from shared_lib import deadletters
from shared_lib.errors import TransientError
from shared_lib.events import kafka_consumer, kafka_reachable

log = logging.getLogger(__name__)


@dataclass
class RedriveReport:
    republished: int = 0
    envelopes: int = 0  # listed, not replayable
    unroutable: int = 0  # no source topic to send them to: listed, skipped
    listed: int = 0  # dry run: letters seen


def _line(record: Any, info: deadletters.DeadLetterInfo, action: str) -> str:
    return (
        f"{record.topic}[{record.partition}]@{record.offset}: {action} "
        f"source={info.source_topic or '?'} partition={info.source_partition} offset={info.source_offset} "
        f"size={len(record.value or b'')} reason={info.reason!r}"
    )


def redrive(
    bootstrap: str,
    topic: str,
    *,
    dry_run: bool = False,
    group: str | None = None,
    timeout_seconds: float = 30.0,
    out: Callable[[str], None] = print,
) -> RedriveReport:
    """Republish the letters of `topic` that no redrive passed yet (all of them on a dry run, from the
    redrive group's committed offsets). Reads up to the end offsets as of its start; returns what it did."""
    from kafka import KafkaProducer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    if not kafka_reachable(bootstrap):
        raise TransientError(f"Kafka at {bootstrap} is unreachable")
    group = group or deadletters.redrive_group(topic)
    consumer = kafka_consumer(
        bootstrap,
        group,
        f"redrive-{topic}",
        initial_offset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=500,
    )
    producer: Any = None
    report = RedriveReport()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"no topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)  # no group membership: only this group's committed offsets are used
        ends = consumer.end_offsets(tps, timeout_ms=int(timeout_seconds * 1000))
        remaining = {
            tp for tp in tps if consumer.position(tp, timeout_ms=int(timeout_seconds * 1000)) < ends[tp]
        }
        if not dry_run:
            producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id=f"redrive-{topic}",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                max_request_size=2 * 1024 * 1024,  # a letter is as large as the record it copies
            )
        while remaining:
            batches = consumer.poll(timeout_ms=int(timeout_seconds * 1000))
            if not batches:
                raise TransientError(f"reading {topic} stalled before its end offsets")
            progress: dict[Any, OffsetAndMetadata] = {}
            for tp, records in batches.items():
                futures = []
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    info = deadletters.describe(record.headers or [])
                    if info.is_envelope:
                        report.envelopes += 1
                        out(_line(record, info, "envelope, not replayable"))
                    elif not info.source_topic:
                        report.unroutable += 1
                        out(_line(record, info, "no source topic, skipped"))
                    elif dry_run:
                        report.listed += 1
                        out(_line(record, info, "would republish"))
                    else:
                        headers = deadletters.original_headers(record.headers or [])
                        futures.append(
                            producer.send(
                                info.source_topic, key=record.key, value=record.value, headers=headers
                            )
                        )
                        out(_line(record, info, "republished"))
                    progress[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                if futures:
                    producer.flush(timeout=timeout_seconds)
                    for future in futures:
                        future.get(timeout=timeout_seconds)  # acknowledged before the progress is committed
                    report.republished += len(futures)
            if progress and not dry_run:
                consumer.commit(offsets=progress)
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    finally:
        if producer is not None:
            producer.close(timeout=timeout_seconds)
        consumer.close(autocommit=False)
    return report


def main(argv: list[str] | None = None, stdout: IO[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of a broker")
    parser.add_argument("--topic", required=True, help="the dead-letter topic, e.g. loms.order-events.dlq")
    parser.add_argument("--dry-run", action="store_true", help="list the letters, republish nothing")
    parser.add_argument(
        "--group", default=None, help="the redrive's consumer group (default redrive.<topic>)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    stream = stdout or sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    report = redrive(args.bootstrap, args.topic, dry_run=args.dry_run, group=args.group, out=say)
    if args.dry_run:
        say(
            f"dry run: {report.listed} to republish, {report.envelopes} envelopes, "
            f"{report.unroutable} unroutable"
        )
    else:
        say(
            f"republished {report.republished}; "
            f"{report.envelopes} envelopes and {report.unroutable} unroutable left"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
