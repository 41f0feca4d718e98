//! The benchmark's dashboard: a client of `GET /api/stream` that reads the live view's server-sent
//! events as the browser's `EventSource` does, and measures, for every reading the stream carries,
//! the time from the reading's event time (its produce time: the simulator stamps a reading as it
//! sends it) to its arrival here. Produce-to-durable latency says when a reading is safe;
//! produce-to-dashboard says when an operator can see it, which is what the live view promises.
//!
//! The stream carries each committed batch's newest readings (at most
//! [`crate::http::live::EVENT_ROWS`]), not all of them: the latency is measured on those. A client
//! that falls behind gets a fresh `snapshot` instead of the events it missed; its readings are not
//! measured (they were shown before, or are stale by design) and the snapshots are counted.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use iotstream_api::LiveEvent;
use tokio_util::sync::CancellationToken;

/// What the dashboard client saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamLatencies {
    /// Produce-to-dashboard latency of each measured reading, ms, in arrival order.
    pub latencies_ms: Vec<f64>,
    /// `batch` events received.
    pub batches: u64,
    /// `snapshot` events received (one on connecting; each further one means the client fell
    /// behind and skipped events).
    pub snapshots: u64,
}

/// One server-sent event: its type (`message` when the server names none) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// An incremental parser of a `text/event-stream` body, per the HTML standard's rules: lines end
/// in LF, CRLF or CR; a blank line dispatches the event; `:` starts a comment (the server's
/// keep-alives); one space after a field's colon is dropped; an event with no data is not
/// dispatched; `id` and `retry` are ignored (the benchmark never reconnects).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF right after it ends the same line.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds `bytes` (any split, even inside a line or a UTF-8 character) and returns the events
    /// they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_ended(&String::from_utf8_lossy(&line)) {
                        events.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    fn line_ended(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let event = if event.is_empty() { "message".to_owned() } else { event };
            return Some(SseEvent { event, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// Reads the live stream of the host at `base` (`http://127.0.0.1:PORT`) until `shutdown` or the
/// stream's end, measuring the readings of every `batch` event whose event time is at least
/// `steady_after` after the first batch that carried readings (the consumer group's join is
/// start-up, not latency: the same steady state as the produce-to-durable figures).
pub async fn watch(base: &str, steady_after: Duration, shutdown: CancellationToken) -> anyhow::Result<StreamLatencies> {
    let url = format!("{base}/api/stream");
    let client = reqwest::Client::builder().build().context("building the HTTP client")?;
    let response = client
        .get(&url)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?;
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let mut seen = StreamLatencies::default();
    let mut measure_from: Option<DateTime<Utc>> = None;
    loop {
        let chunk = tokio::select! {
            () = shutdown.cancelled() => break,
            chunk = body.next() => match chunk {
                None => break,
                Some(chunk) => chunk.with_context(|| format!("reading {url}"))?,
            },
        };
        let events = parser.feed(&chunk);
        let arrived = Utc::now();
        for event in events {
            let live: LiveEvent = serde_json::from_str(&event.data)
                .with_context(|| format!("a {} event of {url} is not a live event", event.event))?;
            match live {
                LiveEvent::Batch { readings, .. } => {
                    seen.batches += 1;
                    if readings.is_empty() {
                        continue;
                    }
                    let from = *measure_from
                        .get_or_insert_with(|| arrived + chrono::Duration::from_std(steady_after).unwrap_or_default());
                    seen.latencies_ms.extend(
                        readings
                            .iter()
                            .filter(|r| r.timestamp >= from)
                            .map(|r| (arrived - r.timestamp).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0),
                    );
                }
                LiveEvent::Snapshot { .. } => seen.snapshots += 1,
                LiveEvent::Plugin { .. } | LiveEvent::Rebalance { .. } => {}
            }
        }
    }
    Ok(seen)
}

/// The `p` quantile (0 to 1) of `values`, interpolated between the two nearest ranks as
/// PostgreSQL's `percentile_cont` does (so the dashboard's figures compare with the database's);
/// `None` for no values.
pub fn percentile_cont(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (below, above) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[below] + (sorted[above] - sorted[below]) * (rank - below as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.to_owned(), data: data.to_owned() }
    }

    #[test]
    fn events_are_dispatched_on_a_blank_line_whatever_the_chunking() {
        let body = b"event: batch\ndata: {\"a\":1}\n\n: keep-alive\n\nevent:snapshot\ndata: x\ndata:  y\n\n";
        let whole = SseParser::default().feed(body);
        assert_eq!(whole, vec![event("batch", "{\"a\":1}"), event("snapshot", "x\n y")]);
        // Byte by byte: the same events.
        let mut parser = SseParser::default();
        let split: Vec<SseEvent> = body.iter().flat_map(|b| parser.feed(std::slice::from_ref(b))).collect();
        assert_eq!(split, whole);
    }

    #[test]
    fn crlf_and_cr_end_lines_and_an_event_without_data_is_dropped() {
        let mut parser = SseParser::default();
        // CRLF split across two chunks must not make an extra blank line.
        assert_eq!(parser.feed(b"event: a\r"), vec![]);
        assert_eq!(parser.feed(b"\ndata: 1\r\n\r\nevent: b\r\r"), vec![event("a", "1")]);
        // No name: `message`. A multi-byte character split between chunks survives.
        assert_eq!(parser.feed(b"data: \xc2"), vec![]);
        assert_eq!(parser.feed(b"\xb0C\n\n"), vec![event("message", "°C")]);
    }

    #[test]
    fn percentiles_interpolate_like_postgresql() {
        // percentile_cont over 1..=10: rank p * 9, interpolated.
        let values: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(percentile_cont(&values, 0.5), Some(5.5));
        assert!((percentile_cont(&values, 0.95).expect("values") - 9.55).abs() < 1e-12);
        assert!((percentile_cont(&values, 0.99).expect("values") - 9.91).abs() < 1e-12);
        assert_eq!(percentile_cont(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile_cont(&[], 0.5), None);
    }
}
