#!/usr/bin/env python3
"""The seed's design (shared/seed-README.md), written competently in Python: the baseline
`cargo xtask bench` runs iotstream beside.

The seed spreads its work over three processes (consumer.py stores raw readings, stream_processor.py
aggregates 1-minute windows and flags 3-sigma z-scores, ml_detector.py scores readings with an
Isolation Forest); here the three are three classes in one process, fed the same batches, so the
baseline pays for one Kafka consumer and one database transaction per batch, not three:

* `RawStore`: the batch's readings, as the seed's `sensor_readings` rows.
* `WindowProcessor`: 1-minute event-time tumbling windows per (location, sensor type): avg, min, max,
  stddev, count, and the count of readings whose z-score over their sensor's last 100 readings
  exceeds 3; a window is emitted once the watermark (the lowest, over the assigned partitions, of
  each partition's newest event time, less 10 s) passes its end.
* `ForestDetector`: a scikit-learn `IsolationForest` (100 trees, 1% contamination) per sensor type,
  on the seed's features (the value, the hour of day as sine and cosine, the change from the
  sensor's previous reading, and the mean, standard deviation and range of its last 100 readings),
  retrained every 5 minutes of event time on that type's latest 5,000 feature rows. Readings of a
  type with no model yet get no prediction row.

Each batch (up to `--batch` messages from `Consumer.consume`) is written with psycopg's COPY into the
three tables in one transaction, then the consumer's offsets are committed: at-least-once, as the
seed. The run stops after `--expect` messages, or `--idle` seconds without one.

It prints one JSON line, the fields `cargo xtask bench` reads from every system: readings, invalid,
seconds (first message received to last batch committed), readings_per_s, latency_ms (p50, p95, p99:
each message's Kafka timestamp to its batch's commit), peak_rss_mib, cpu_s (CPU seconds of the
process over the same span) and the rows written.
"""
import argparse
import collections
import json
import math
import resource
import sys
import time
from datetime import datetime, timezone

import numpy as np
import psycopg
from confluent_kafka import Consumer, KafkaError
from sklearn.ensemble import IsolationForest

WINDOW_SECONDS = 60
ALLOWED_LATENESS_SECONDS = 10
HISTORY = 100
ZSCORE_THRESHOLD = 3.0
ZSCORE_MIN_HISTORY = 30
RETRAIN_EVERY_SECONDS = 300
TRAINING_ROWS = 5000
MIN_TRAINING_ROWS = 256

SCHEMA = """
DROP TABLE IF EXISTS sensor_readings, sensor_aggregates, ml_anomaly_predictions;
CREATE TABLE sensor_readings (
    id SERIAL PRIMARY KEY, sensor_id VARCHAR(100), sensor_type VARCHAR(50), location VARCHAR(100),
    value NUMERIC(10,2), timestamp TIMESTAMP, anomaly BOOLEAN, unit VARCHAR(20));
CREATE TABLE sensor_aggregates (
    window_start TIMESTAMP, window_end TIMESTAMP, location VARCHAR(100), sensor_type VARCHAR(50),
    avg_value NUMERIC(10,2), min_value NUMERIC(10,2), max_value NUMERIC(10,2), stddev_value NUMERIC(10,2),
    count_readings INTEGER, anomaly_count INTEGER);
CREATE TABLE ml_anomaly_predictions (
    sensor_id VARCHAR(100), sensor_type VARCHAR(50), value NUMERIC(10,2), timestamp TIMESTAMP,
    is_anomaly BOOLEAN, anomaly_score NUMERIC(10,6), rule_based_anomaly BOOLEAN);
CREATE INDEX sensor_readings_timestamp ON sensor_readings (timestamp);
CREATE INDEX sensor_readings_sensor ON sensor_readings (sensor_id, timestamp);
CREATE INDEX sensor_aggregates_window ON sensor_aggregates (window_start);
CREATE INDEX ml_anomaly_predictions_timestamp ON ml_anomaly_predictions (timestamp);
"""


class Reading:
    """One decoded seed-format message."""
    __slots__ = ("sensor_id", "sensor_type", "location", "value", "epoch", "label", "unit", "partition")

    def __init__(self, payload, partition):
        doc = json.loads(payload)
        self.value = float(doc["value"])
        if math.isnan(self.value) or math.isinf(self.value):
            raise ValueError("value is not a finite number")
        self.sensor_id = str(doc["sensor_id"])
        self.sensor_type = str(doc["sensor_type"])
        self.location = str(doc["location"])
        self.epoch = epoch_seconds(doc["timestamp"])
        self.label = bool(doc.get("anomaly", False))
        self.unit = str(doc.get("unit", ""))
        self.partition = partition

    def naive_utc(self):
        return datetime.fromtimestamp(self.epoch, timezone.utc).replace(tzinfo=None)


def epoch_seconds(stamp):
    """The seed writes ISO 8601 (naive means UTC); numbers are epoch milliseconds."""
    if isinstance(stamp, (int, float)):
        return stamp / 1000.0
    parsed = datetime.fromisoformat(stamp)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class History:
    """A sensor's last HISTORY values with running sums, so mean and deviation cost O(1)."""
    __slots__ = ("values", "sum", "sum_sq", "previous")

    def __init__(self):
        self.values = collections.deque()
        self.sum = 0.0
        self.sum_sq = 0.0
        self.previous = None

    def mean_std(self):
        n = len(self.values)
        mean = self.sum / n
        return mean, math.sqrt(max(self.sum_sq / n - mean * mean, 0.0))

    def add(self, value):
        self.values.append(value)
        self.sum += value
        self.sum_sq += value * value
        if len(self.values) > HISTORY:
            dropped = self.values.popleft()
            self.sum -= dropped
            self.sum_sq -= dropped * dropped
        self.previous = value


class RawStore:
    """consumer.py: readings as rows."""

    columns = "sensor_id, sensor_type, location, value, timestamp, anomaly, unit"

    @staticmethod
    def rows(readings):
        return [(r.sensor_id, r.sensor_type, r.location, round(r.value, 2), r.naive_utc(), r.label, r.unit)
                for r in readings]


class WindowProcessor:
    """stream_processor.py: tumbling windows and the 3-sigma rule."""

    columns = ("window_start, window_end, location, sensor_type, avg_value, min_value, max_value, stddev_value, "
               "count_readings, anomaly_count")

    def __init__(self):
        self.open = {}  # (window start, location, type) -> [count, sum, sum of squares, min, max, anomalies]
        self.newest_by_partition = {}
        self.watermark = -math.inf
        self.late = 0

    def add(self, reading, rule_anomaly):
        newest = self.newest_by_partition.get(reading.partition, -math.inf)
        if reading.epoch > newest:
            self.newest_by_partition[reading.partition] = reading.epoch
        start = reading.epoch - reading.epoch % WINDOW_SECONDS
        if start + WINDOW_SECONDS <= self.watermark:
            self.late += 1
            return
        key = (start, reading.location, reading.sensor_type)
        window = self.open.get(key)
        value = reading.value
        if window is None:
            self.open[key] = [1, value, value * value, value, value, int(rule_anomaly)]
            return
        window[0] += 1
        window[1] += value
        window[2] += value * value
        if value < window[3]:
            window[3] = value
        if value > window[4]:
            window[4] = value
        window[5] += rule_anomaly

    def close(self, assigned):
        """The windows the advanced watermark closes, as rows."""
        if assigned and all(p in self.newest_by_partition for p in assigned):
            low = min(self.newest_by_partition[p] for p in assigned)
            self.watermark = max(self.watermark, low - ALLOWED_LATENESS_SECONDS)
        rows = []
        for key in [k for k in self.open if k[0] + WINDOW_SECONDS <= self.watermark]:
            count, total, total_sq, low, high, anomalies = self.open.pop(key)
            mean = total / count
            std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
            start = datetime.fromtimestamp(key[0], timezone.utc).replace(tzinfo=None)
            end = datetime.fromtimestamp(key[0] + WINDOW_SECONDS, timezone.utc).replace(tzinfo=None)
            rows.append((start, end, key[1], key[2], round(mean, 2), round(low, 2), round(high, 2), round(std, 2),
                         count, anomalies))
        return rows


class ForestDetector:
    """ml_detector.py: an Isolation Forest per sensor type on the seed's features, retrained online."""

    columns = "sensor_id, sensor_type, value, timestamp, is_anomaly, anomaly_score, rule_based_anomaly"

    def __init__(self):
        self.training = collections.defaultdict(lambda: collections.deque(maxlen=TRAINING_ROWS))
        self.models = {}
        self.trained_at = {}
        self.pending = collections.defaultdict(list)  # type -> [(reading, rule anomaly, features)]

    @staticmethod
    def features(reading, history):
        """The seed's features, from the sensor's history including this reading."""
        change = 0.0 if history.previous is None else reading.value - history.previous
        history.add(reading.value)
        mean, std = history.mean_std()
        angle = 2.0 * math.pi * ((reading.epoch % 86400.0) / 3600.0) / 24.0
        return (reading.value, math.sin(angle), math.cos(angle), change, mean, std,
                max(history.values) - min(history.values))

    def add(self, reading, rule_anomaly, features):
        self.training[reading.sensor_type].append(features)
        self.pending[reading.sensor_type].append((reading, rule_anomaly, features))

    def predict(self):
        rows = []
        for sensor_type, items in self.pending.items():
            newest = max(item[0].epoch for item in items)
            due = newest - self.trained_at.get(sensor_type, -math.inf) >= RETRAIN_EVERY_SECONDS
            if due and len(self.training[sensor_type]) >= MIN_TRAINING_ROWS:
                model = IsolationForest(n_estimators=100, contamination=0.01, random_state=0)
                model.fit(np.array(self.training[sensor_type], dtype=np.float64))
                self.models[sensor_type] = model
                self.trained_at[sensor_type] = newest
            model = self.models.get(sensor_type)
            if model is None:
                continue
            scores = model.score_samples(np.array([item[2] for item in items], dtype=np.float64))
            threshold = model.offset_
            for (reading, rule_anomaly, _features), score in zip(items, scores.tolist()):
                rows.append((reading.sensor_id, sensor_type, round(reading.value, 2), reading.naive_utc(),
                             score < threshold, round(-score, 6), rule_anomaly))
        self.pending.clear()
        return rows


class Pipeline:
    def __init__(self):
        self.histories = collections.defaultdict(History)
        self.windows = WindowProcessor()
        self.forest = ForestDetector()

    def process(self, readings, assigned):
        """Returns the batch's rows: (readings, aggregates, predictions)."""
        for reading in readings:
            history = self.histories[reading.sensor_id]
            rule_anomaly = False
            if len(history.values) >= ZSCORE_MIN_HISTORY:
                mean, std = history.mean_std()
                rule_anomaly = std > 0.0 and abs(reading.value - mean) / std > ZSCORE_THRESHOLD
            features = ForestDetector.features(reading, history)
            self.windows.add(reading, rule_anomaly)
            self.forest.add(reading, rule_anomaly, features)
        return RawStore.rows(readings), self.windows.close(assigned), self.forest.predict()


def copy_into(cursor, table, columns, rows):
    if rows:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def percentiles(samples):
    if not samples:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    values = np.array(samples)
    return {name: round(float(np.percentile(values, q)), 1) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", default="iot_sensors")
    parser.add_argument("--group", default="seed-baseline")
    parser.add_argument("--dsn", required=True, help="a database the baseline may create its tables in")
    parser.add_argument("--expect", type=int, default=0, help="stop after this many messages (0: when idle)")
    parser.add_argument("--idle", type=float, default=30.0, help="stop after this many seconds without a message")
    parser.add_argument("--batch", type=int, default=1000, help="messages per consume call and transaction")
    args = parser.parse_args()

    database = psycopg.connect(args.dsn)
    database.execute(SCHEMA)
    database.commit()
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([args.topic])
    pipeline = Pipeline()
    received = invalid = 0
    rows_written = [0, 0, 0]
    latencies_ms = []
    started = cpu_at_start = None
    last_message = time.monotonic()
    while not (args.expect and received >= args.expect):
        messages = consumer.consume(num_messages=args.batch, timeout=0.5)
        if not messages:
            if time.monotonic() - last_message > args.idle:
                break
            continue
        last_message = time.monotonic()
        if started is None:
            started, cpu_at_start = time.monotonic(), cpu_seconds()
        readings, produced_ms = [], []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    print(f"seed_baseline: Kafka error: {error}", file=sys.stderr)
                continue
            received += 1
            produced_ms.append(message.timestamp()[1])
            try:
                readings.append(Reading(message.value(), message.partition()))
            except (ValueError, KeyError, TypeError):
                invalid += 1
        assigned = {tp.partition for tp in consumer.assignment()}
        batch_rows = pipeline.process(readings, assigned)
        with database.cursor() as cursor:
            for i, (table, columns) in enumerate((("sensor_readings", RawStore.columns),
                                                  ("sensor_aggregates", WindowProcessor.columns),
                                                  ("ml_anomaly_predictions", ForestDetector.columns))):
                copy_into(cursor, table, columns, batch_rows[i])
                rows_written[i] += len(batch_rows[i])
        database.commit()
        consumer.commit(asynchronous=False)
        committed_ms = time.time() * 1000.0
        latencies_ms.extend(committed_ms - p for p in produced_ms if p > 0)
    seconds = time.monotonic() - started if started is not None else 0.0
    cpu = cpu_seconds() - cpu_at_start if cpu_at_start is not None else 0.0
    timed_until_unix_ms = time.time() * 1000.0
    consumer.close()
    database.close()
    print(json.dumps({
        "readings": received, "invalid": invalid, "late": pipeline.windows.late, "seconds": round(seconds, 3),
        "readings_per_s": round(received / seconds, 1) if seconds > 0 else 0.0,
        "latency_ms": percentiles(latencies_ms), "peak_rss_mib": round(peak_rss_mib(), 1), "cpu_s": round(cpu, 3),
        "timed_until_unix_ms": timed_until_unix_ms,
        "rows": {"sensor_readings": rows_written[0], "sensor_aggregates": rows_written[1],
                 "ml_anomaly_predictions": rows_written[2]},
    }))


if __name__ == "__main__":
    main()
