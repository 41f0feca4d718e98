#!/usr/bin/env python3
"""The ceilings `cargo xtask bench` puts beside the pipelines: how fast the broker gives the topic to a
plain consumer, and how fast PostgreSQL takes the same readings with COPY. No pipeline can beat
either, so they say how much of a pipeline's time is its own.

    ceilings.py consume --brokers ADDR --topic T --expect N
        confluent-kafka reads the topic from the start, touching each message's value and
        timestamp: seconds from the first message to the N-th.
    ceilings.py copy --brokers ADDR --topic T --expect N --dsn URL --migrations DIR
        reads the topic first (not timed) and renders each reading as a row of iotstream's
        `sensor_readings` (the schema the files in DIR create in the fresh database URL, indexes
        included), then times one COPY of all the rows and the commit.

    ceilings.py topic --brokers ADDR --topic T --partitions P
        creates the topic the harness fills (setup, not a measurement; an existing topic is an error).

Each measurement prints one JSON line with the fields the harness reads from every system (readings, seconds,
readings_per_s, peak_rss_mib, cpu_s over the timed span).
"""
import argparse
import json
import pathlib
import resource
import sys
import time
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaError, TopicPartition


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def assigned_consumer(brokers, topic):
    """A consumer of every partition of `topic` from offset 0, with no group to join."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "iotstream-bench-ceiling",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    return consumer


def each_message(consumer, expect, idle_s=30.0):
    """Yields messages until `expect` of them, or `idle_s` without one."""
    seen = 0
    last = time.monotonic()
    while seen < expect:
        batch = consumer.consume(num_messages=10_000, timeout=0.5)
        if not batch:
            if time.monotonic() - last > idle_s:
                print(f"ceilings: only {seen} of {expect} messages arrived", file=sys.stderr)
                return
            continue
        last = time.monotonic()
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    print(f"ceilings: Kafka error: {error}", file=sys.stderr)
                continue
            seen += 1
            yield message


def consume(args):
    consumer = assigned_consumer(args.brokers, args.topic)
    count = size = 0
    started = cpu_at_start = None
    for message in each_message(consumer, args.expect):
        if started is None:
            started, cpu_at_start = time.monotonic(), cpu_seconds()
        size += len(message.value())
        message.timestamp()
        count += 1
    seconds = time.monotonic() - started if started is not None else 0.0
    cpu = cpu_seconds() - cpu_at_start if cpu_at_start is not None else 0.0
    consumer.close()
    return {"readings": count, "bytes": size, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3)}


def copy_escape(text):
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy(args):
    import psycopg

    consumer = assigned_consumer(args.brokers, args.topic)
    lines = []
    for message in each_message(consumer, args.expect):
        doc = json.loads(message.value())
        stamp = datetime.fromisoformat(doc["timestamp"])
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        lines.append("\t".join((copy_escape(str(doc["sensor_id"])), copy_escape(str(doc["sensor_type"])),
                                copy_escape(str(doc["location"])), repr(float(doc["value"])), stamp.isoformat(),
                                "t" if doc.get("anomaly") else "f", copy_escape(str(doc.get("unit", ""))), "f",
                                str(message.partition()), str(message.offset()), "1")))
    consumer.close()
    data = ("\n".join(lines) + "\n").encode()
    with psycopg.connect(args.dsn) as database:
        for migration in sorted(pathlib.Path(args.migrations).glob("*.sql")):
            database.execute(migration.read_text())
        database.commit()
        started, cpu_at_start = time.monotonic(), cpu_seconds()
        with database.cursor() as cursor:
            with cursor.copy("COPY sensor_readings (sensor_id, sensor_type, location, value, timestamp, anomaly, "
                             "unit, flagged, kafka_partition, kafka_offset, source_id) FROM STDIN") as copy_in:
                for start in range(0, len(data), 1 << 20):
                    copy_in.write(data[start:start + (1 << 20)])
        database.commit()
        seconds = time.monotonic() - started
        cpu = cpu_seconds() - cpu_at_start
        timed_until_unix_ms = time.time() * 1000.0
        stored = database.execute("SELECT count(*) FROM sensor_readings").fetchone()[0]
    return {"readings": stored, "seconds": round(seconds, 3), "cpu_s": round(cpu, 3),
            "timed_until_unix_ms": timed_until_unix_ms}


def create_topic(args):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": args.brokers})
    futures = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)])
    futures[args.topic].result(timeout=60)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("what", choices=["consume", "copy", "topic"])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="iot_sensors")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4, help="topic: its partitions")
    parser.add_argument("--dsn", help="copy: the fresh database to write into")
    parser.add_argument("--migrations", help="copy: the folder of iotstream's schema migrations")
    args = parser.parse_args()
    if args.what == "copy" and not (args.dsn and args.migrations):
        parser.error("copy needs --dsn and --migrations")
    if args.what == "topic":
        create_topic(args)
        return
    result = consume(args) if args.what == "consume" else copy(args)
    result["readings_per_s"] = round(result["readings"] / result["seconds"], 1) if result["seconds"] > 0 else 0.0
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
