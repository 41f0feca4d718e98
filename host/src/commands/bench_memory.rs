//! `iotstream bench-memory`: a plugin's linear memory over hours of simulated stream, in a minute or
//! two. An hour's soak (`cargo xtask soak`) is the proof that a host's memory stays flat, but it
//! takes an hour a try; a plugin's share of it (every instance's memory only ever grows, so its
//! allocator's high-water mark is what it keeps) can be replayed here as fast as the plugin runs:
//! the lanes of one host at the soak's rate, their batches cut as the pipeline's linger cuts them
//! (or growing over the run, as the batches of lanes falling behind their broker do) and passed in
//! calls of at most `--readings-per-call` readings as the host passes them, each lane's instance
//! checkpointed (its state exported, and replaced when its memory grew past its ceiling) as
//! `iotstream run` does, with the memory's settling clock following event time.

use std::num::NonZeroUsize;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::bench_plugins::{BuiltinPluginsDir, Shipped};
use crate::pipeline::PipelineConfig;
use crate::plugins::bindings::Reading as WitReading;
use crate::plugins::{Clock, Plugin, PluginError, PluginLimits, PluginRuntime, READINGS_PER_CALL, SensorCatalog};
use crate::simulate::Fleet;

/// `iotstream bench-memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchMemoryConfig {
    /// The plugin measured.
    #[arg(long, value_enum, default_value = "isolation-forest")]
    pub plugin: Shipped,
    /// Minutes of event time simulated.
    #[arg(long, default_value_t = 120)]
    pub minutes: u32,
    /// Lanes, each with its own instance (the soak's topic has 12 partitions).
    #[arg(long, default_value_t = 12)]
    pub lanes: usize,
    /// Simulated sensors; the n-th sensor's readings go to lane `n % lanes`.
    #[arg(long, default_value_t = 50)]
    pub sensors: usize,
    /// Readings per second of event time, all sensors together (the soak's rate).
    #[arg(long, default_value_t = 5000)]
    pub rate: u32,
    /// Event time a lane's batch gathers readings for, in milliseconds (`iotstream run`'s linger).
    #[arg(long, default_value_t = PipelineConfig::BATCH_LINGER.as_millis() as u64)]
    pub linger_ms: u64,
    /// The linger at the last minute, in milliseconds: from `--linger-ms` it grows in step with
    /// event time to this, so the batches grow as a consumer falling further behind its broker
    /// takes them (whole fetches of its backlog). Default: `--linger-ms` all along.
    #[arg(long)]
    pub linger_ms_at_end: Option<u64>,
    /// The most readings one plugin call carries (`iotstream run --plugin-readings-per-call`).
    #[arg(long, default_value_t = READINGS_PER_CALL)]
    pub readings_per_call: NonZeroUsize,
    /// Event time between checkpoints ("0s": none; `iotstream run`'s default).
    #[arg(long, default_value_t = PipelineConfig::CHECKPOINT_INTERVAL.into())]
    pub checkpoint_interval: humantime::Duration,
    /// Minutes of event time between two samples of the report.
    #[arg(long, default_value_t = 10)]
    pub every: u32,
    /// Where the plugin's `.wasm` is.
    #[command(flatten)]
    pub builtin_plugins: BuiltinPluginsDir,
}

/// The lanes' memory at one minute of event time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySample {
    /// Minutes of event time since the start.
    pub minute: u32,
    /// Every lane's linear memory together, bytes.
    pub total_bytes: u64,
    /// Each lane's linear memory, bytes.
    pub lane_bytes: Vec<u64>,
    /// Instances replaced at checkpoints so far, every lane together.
    pub replacements: u64,
    /// The checkpointed states' size at the last checkpoint, every lane together, bytes.
    pub state_bytes: u64,
    /// The largest batch a lane took since the sample before, readings.
    pub largest_batch: usize,
}

/// Replays `config.minutes` of the simulated stream through `config.lanes` instances of the plugin.
pub fn bench_memory(config: &BenchMemoryConfig) -> Result<Vec<MemorySample>, PluginError> {
    let clock = Clock::manual();
    let runtime = PluginRuntime::with_limits(PluginLimits {
        clock: clock.clone(),
        readings_per_call: config.readings_per_call,
        ..PluginLimits::default()
    })?;
    let path = config.builtin_plugins.wasm(config.plugin);
    let lanes = config.lanes.max(1);
    let mut lane: Vec<Lane> = (0..lanes)
        .map(|_| {
            Ok(Lane {
                plugin: runtime.load_with_config(&path, None)?,
                catalog: SensorCatalog::default(),
                batch: Vec::new(),
                state_bytes: 0,
                largest_batch: 0,
            })
        })
        .collect::<Result<_, PluginError>>()?;
    let mut fleet = Fleet::new(config.sensors, 0.002, 7);
    let sensors = fleet.len();
    let start: DateTime<Utc> = Utc.timestamp_millis_opt(1_767_225_600_000).single().unwrap_or_default();
    let step_us = 1_000_000 / i64::from(config.rate.max(1));
    let end_us = i64::from(config.minutes) * 60_000_000;
    // The linger at `at_us`: from the first to the last in step with event time.
    let first_linger_us = (config.linger_ms.max(1) * 1000) as f64;
    let last_linger_us = (config.linger_ms_at_end.unwrap_or(config.linger_ms).max(1) * 1000) as f64;
    let linger_us = |at_us: i64| {
        (first_linger_us + (last_linger_us - first_linger_us) * at_us as f64 / end_us.max(1) as f64) as i64
    };
    let checkpoint_us = config.checkpoint_interval.as_micros() as i64;
    let every_us = i64::from(config.every.max(1)) * 60_000_000;
    let (mut next_cut, mut next_checkpoint, mut next_sample) = (linger_us(0), checkpoint_us, every_us);
    let mut samples = Vec::new();
    let mut n = 0usize;
    let mut at_us = 0;
    while at_us < end_us {
        let reading = fleet.next_reading(start + chrono::Duration::microseconds(at_us));
        let lane_of = &mut lane[(n % sensors) % lanes];
        let wit = lane_of.catalog.wit_reading(&reading);
        lane_of.batch.push(wit);
        n += 1;
        at_us += step_us;
        if at_us >= next_cut {
            for l in &mut lane {
                l.call(config.plugin)?;
            }
            next_cut += linger_us(at_us);
        }
        if checkpoint_us > 0 && at_us >= next_checkpoint {
            clock.advance(Duration::from_micros(checkpoint_us as u64));
            for l in &mut lane {
                l.state_bytes = l.plugin.checkpoint_state(&l.catalog)?.len() as u64;
            }
            next_checkpoint += checkpoint_us;
        }
        if at_us >= next_sample {
            let lane_bytes: Vec<u64> = lane.iter().map(|l| l.plugin.metrics().memory_bytes).collect();
            samples.push(MemorySample {
                minute: (at_us / 60_000_000) as u32,
                total_bytes: lane_bytes.iter().sum(),
                lane_bytes,
                replacements: lane.iter().map(|l| l.plugin.metrics().memory_replacements).sum(),
                state_bytes: lane.iter().map(|l| l.state_bytes).sum(),
                largest_batch: lane.iter_mut().map(|l| std::mem::take(&mut l.largest_batch)).max().unwrap_or(0),
            });
            next_sample += every_us;
        }
    }
    Ok(samples)
}

/// One lane: its instance, its catalog and the batch it gathers.
struct Lane {
    plugin: Plugin,
    catalog: SensorCatalog,
    batch: Vec<WitReading>,
    state_bytes: u64,
    largest_batch: usize,
}

impl Lane {
    /// Hands the gathered batch to the plugin (if any readings came).
    fn call(&mut self, plugin: Shipped) -> Result<(), PluginError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        plugin.call(&mut self.plugin, &self.catalog, &self.batch)?;
        self.largest_batch = self.largest_batch.max(self.batch.len());
        self.batch.clear();
        Ok(())
    }
}

/// Prints each sample as a JSON line and a table of them, with the growth after the first sample.
pub fn print(samples: &[MemorySample]) -> anyhow::Result<()> {
    samples.iter().try_for_each(super::print_json)?;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    for s in samples {
        eprintln!(
            "minute {:>4}: {:>7.2} MiB in all, {} replaced, states {:.2} MiB, batches up to {:>5} | {}",
            s.minute,
            mib(s.total_bytes),
            s.replacements,
            mib(s.state_bytes),
            s.largest_batch,
            s.lane_bytes.iter().map(|&b| format!("{:.2}", mib(b))).collect::<Vec<_>>().join(" ")
        );
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let change = mib(last.total_bytes) - mib(first.total_bytes);
        eprintln!(
            "from minute {} to {}: {change:+.2} MiB ({:+.1}%)",
            first.minute,
            last.minute,
            change / mib(first.total_bytes).max(f64::MIN_POSITIVE) * 100.0
        );
    }
    Ok(())
}
