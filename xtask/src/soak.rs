//! `cargo xtask soak`: does the host's memory stay flat under a sustained load?
//!
//! A benchmark of a few hundred thousand readings says nothing about a leak that grows by a few
//! kilobytes a minute, which is what kills a stream processor after a week. The soak runs
//! `iotstream run` as its own process (every plugin in `--plugins`) into a database of its own
//! (`--database`, `iotstream_soak`: dropped and created anew, and dropped after) and, from the
//! moment it has stored its first readings, samples the process's resident memory (`VmRSS`), its
//! plugins' linear memories (from its `/metrics`) and the readings stored (the sum of the source's
//! stored positions, `kafka_offsets`) every `--interval` seconds for `--minutes`, then prints the
//! samples and compares the mean of the first quarter of the run with the last. Everything goes to
//! `target/bench/soak-<time>.json`.
//!
//! The readings come as in production, from outside the host: a topic of `--partitions` on a
//! Kafka-protocol broker (`--brokers`, or a tansu with in-memory storage started for the run, as
//! `cargo xtask bench` does), written by `iotstream simulate` in a process of its own at `--rate`,
//! in lz4-compressed batches as a production producer sends them (`--compression`).
//! The broker's and the simulator's memory are sampled too, and reported beside, never counted as
//! the host's. `--embedded` soaks the demo's set-up instead: the embedded broker and simulator in
//! the host's process, whose memory then holds the broker's log too (about 5 MB a partition,
//! which grows for the first minutes and then stays, and churns as the log rolls).
//!
//! The stored count shows whether the host kept up with the rate (a host that falls behind is a
//! different failure).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{database_url, ensure_postgres, target_dir};

/// `cargo xtask soak`'s options.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// Readings/s the embedded simulator produces.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Simulated sensors.
    #[arg(long, default_value_t = 50)]
    sensors: u64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// Minutes of warm-up (the embedded broker filling its partitions, the forests their buffers,
    /// the plugins' memories growing to their batches) left out of the second verdict, which
    /// compares the quarters of the rest and fits its growth per hour.
    #[arg(long, default_value_t = 10)]
    warm_up: u64,
    /// The soak's own database on the server of `DATABASE_URL`: dropped and created anew, and
    /// dropped after.
    #[arg(long, default_value = "iotstream_soak")]
    database: String,
    /// The plugins the host loads.
    #[arg(long, default_value = "dist/plugins")]
    plugins: PathBuf,
    /// Run this `iotstream` binary as it is instead of building the plugins and the host in
    /// release first (to build once, then soak under a lock that keeps other work off the machine).
    #[arg(long)]
    iotstream: Option<PathBuf>,
    /// A Kafka-protocol broker to soak against (default: a tansu started for the run).
    #[arg(long, conflicts_with = "embedded")]
    brokers: Option<String>,
    /// Partitions of the soak's topic (one lane each in the host).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// The embedded broker and simulator, in the host's process (the demo's set-up), instead of a
    /// broker and a simulator of their own.
    #[arg(long)]
    embedded: bool,
    /// How the simulator compresses its batches (librdkafka's `compression.type`). lz4, as a
    /// production producer sends: the broker keeps batches as they come, and tansu, which keeps its
    /// whole log in memory, held 7.4 GB of an uncompressed hour and slowed its fetches from about
    /// minute 40 in every such hour, so the host fell behind for the broker's sake.
    #[arg(long, value_enum, default_value = "lz4", conflicts_with = "embedded")]
    compression: Compression,
}

/// A producer's compression codec (librdkafka's `compression.type` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec as librdkafka names it.
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// One sample of the running host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Seconds since the host stored its first readings (the soak's start).
    pub seconds: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Readings stored so far.
    pub stored: u64,
    /// The resident memory of the processes beside the host (the broker started for the run, the
    /// simulator), MiB, where there are such: reported, not judged.
    pub beside: Beside,
    /// What the host's `/metrics` said of its plugins' memories (empty when it did not answer).
    pub plugins: PluginMemory,
}

/// The plugins' linear memories in the host, MiB, by plugin (each summed over its lanes), as the
/// host's `/metrics` reports them (`iotstream_plugin_memory_bytes`): part of the host's resident
/// memory, which a leak or fragmentation inside a plugin grows.
pub(crate) type PluginMemory = std::collections::BTreeMap<String, f64>;

/// The resident memory of the processes a soak runs beside the host, MiB.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Beside {
    /// The broker started for the run (`None`: embedded, or a broker given by address).
    pub broker_mib: Option<f64>,
    /// The simulator (`None`: embedded in the host).
    pub simulator_mib: Option<f64>,
}

/// The soak's verdict on its samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Flatness {
    /// Mean RSS of the first quarter of the samples, MiB.
    pub first_quarter_mib: f64,
    /// Mean RSS of the last quarter, MiB.
    pub last_quarter_mib: f64,
    /// The last quarter over the first, in percent (positive: grew).
    pub change_percent: f64,
    /// Whether the change is within [`FLAT_PERCENT`] either way.
    pub flat: bool,
}

/// How far the last quarter's mean memory may move from the first quarter's for the soak to call
/// the memory flat: an allocator's arenas and caches move by a few percent; a leak grows steadily.
pub(crate) const FLAT_PERCENT: f64 = 5.0;

/// Compares the first quarter of `samples` with the last (a quarter of at least one sample);
/// `None` with fewer than four samples, where quarters mean nothing.
pub(crate) fn flatness(samples: &[Sample]) -> Option<Flatness> {
    if samples.len() < 4 {
        return None;
    }
    let quarter = samples.len() / 4;
    let mean = |s: &[Sample]| s.iter().map(|s| s.rss_mib).sum::<f64>() / s.len() as f64;
    let first_quarter_mib = mean(&samples[..quarter]);
    let last_quarter_mib = mean(&samples[samples.len() - quarter..]);
    let change_percent = (last_quarter_mib - first_quarter_mib) / first_quarter_mib * 100.0;
    Some(Flatness { first_quarter_mib, last_quarter_mib, change_percent, flat: change_percent.abs() <= FLAT_PERCENT })
}

/// The samples taken at or after `warm_up_s`: the steady state, where a leak shows as growth.
pub(crate) fn after_warm_up(samples: &[Sample], warm_up_s: f64) -> &[Sample] {
    let start = samples.iter().position(|s| s.seconds >= warm_up_s).unwrap_or(samples.len());
    &samples[start..]
}

/// The least-squares slope of RSS over time, in MiB an hour: what a leak of so many kilobytes a
/// minute adds up to. `None` with fewer than two samples at distinct times.
pub(crate) fn growth_mib_per_hour(samples: &[Sample]) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return None;
    }
    let mean_t = samples.iter().map(|s| s.seconds).sum::<f64>() / n;
    let mean_rss = samples.iter().map(|s| s.rss_mib).sum::<f64>() / n;
    let covariance: f64 = samples.iter().map(|s| (s.seconds - mean_t) * (s.rss_mib - mean_rss)).sum();
    let variance: f64 = samples.iter().map(|s| (s.seconds - mean_t).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance * 3600.0)
}

pub fn soak(args: &SoakArgs) -> Result<()> {
    let database_url = database_url();
    ensure_postgres(&database_url)?;
    let iotstream = match &args.iotstream {
        Some(binary) => binary.clone(),
        None => {
            crate::build_pipeline(true)?;
            target_dir().join("release/iotstream")
        }
    };
    // The broker, its address, and the topic (none for the embedded broker, which makes its own).
    let (broker, source) = if args.embedded {
        (None, None)
    } else {
        let python = crate::bench::ensure_bench_venv()?;
        let (broker, brokers) = match &args.brokers {
            Some(brokers) => (None, brokers.clone()),
            None => {
                let (child, address) = crate::bench::start_tansu(&python)?;
                (Some(Running(child)), address)
            }
        };
        let topic = format!("iotstream_soak_{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs());
        crate::bench::create_topic(&python, &brokers, &topic, args.partitions)?;
        (broker, Some(Source { brokers, topic }))
    };
    let soak_url = crate::bench::fresh_database(&database_url, &args.database)?;
    let result = run(args, &iotstream, &soak_url, source.as_ref(), broker.as_ref());
    let dropped = crate::bench::drop_database(&database_url, &args.database);
    drop(broker);
    let samples = result?;
    dropped?;
    report(args, source.as_ref(), &samples)
}

/// The topic a soak reads, on a broker outside the host.
struct Source {
    /// The broker's address.
    brokers: String,
    /// The soak's topic, created for the run.
    topic: String,
}

/// Runs the host (and the simulator, for a `source` outside it) and samples it until
/// `args.minutes` have passed; stops them either way.
fn run(
    args: &SoakArgs,
    iotstream: &Path,
    soak_url: &str,
    source: Option<&Source>,
    broker: Option<&Running>,
) -> Result<Vec<Sample>> {
    std::fs::create_dir_all(target_dir().join("bench"))?;
    let log_path = target_dir().join("bench/soak-host.log");
    let log = std::fs::File::create(&log_path)?;
    let (rate, sensors) = (args.rate.to_string(), args.sensors.to_string());
    let mut simulator = None;
    // A free port, so that the samples can read the host's `/metrics`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = Command::new(iotstream);
    command.args(["run", "--listen", &format!("127.0.0.1:{port}")]);
    match source {
        None => {
            command.args(["--rate", &rate, "--sensors", &sensors]);
        }
        Some(Source { brokers, topic }) => {
            command.args(["--brokers", brokers, "--topic", topic, "--group", topic]);
            let simulator_log_path = target_dir().join("bench/soak-simulator.log");
            let simulator_log = std::fs::File::create(&simulator_log_path)?;
            let mut simulate = Command::new(iotstream);
            simulate
                .args(["simulate", "--brokers", brokers, "--topic", topic, "--rate", &rate, "--sensors", &sensors])
                .args(["--kafka-option", &format!("compression.type={}", args.compression.name())])
                .stdout(simulator_log.try_clone()?)
                .stderr(simulator_log);
            eprintln!("xtask: {simulate:?} (its log: {})", simulator_log_path.display());
            let child = simulate.spawn().with_context(|| format!("cannot start {}", iotstream.display()))?;
            simulator = Some(Running(child));
        }
    }
    command
        .arg("--builtin-plugins")
        .arg(private_plugins(&args.plugins)?)
        .env("DATABASE_URL", soak_url)
        .stdout(log.try_clone()?)
        .stderr(log);
    eprintln!("xtask: {command:?} (its log: {})", log_path.display());
    let child = command.spawn().with_context(|| format!("cannot start {}", iotstream.display()))?;
    let mut host = Running(child);
    // The soak's clock starts once the host is under load, with its first readings stored: before,
    // it migrates the database, compiles its plugins and joins its group (and holds a fraction of
    // its memory, which the first quarter's mean would count as growth).
    let launched = Instant::now();
    while stored(soak_url, Stdio::null()).unwrap_or(0) == 0 {
        if let Some(status) = host.0.try_wait()? {
            bail!("the host exited before it stored a reading ({status}): see {}", log_path.display());
        }
        if launched.elapsed() > STARTUP_LIMIT {
            bail!("the host stored no reading in {STARTUP_LIMIT:?}: see {}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("xtask: the host stored its first readings {:.1?} after it started: the soak begins", launched.elapsed());
    let started = Instant::now();
    let end = started + Duration::from_secs(args.minutes * 60);
    let mut samples = Vec::new();
    let mut next = started + Duration::from_secs(args.interval);
    while next <= end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        if let Some(status) = host.0.try_wait()? {
            bail!("the host exited during the soak ({status}): see {}", log_path.display());
        }
        if let Some(status) = simulator.as_mut().map(|s| s.0.try_wait()).transpose()?.flatten() {
            bail!("the simulator exited during the soak ({status}): see target/bench/soak-simulator.log");
        }
        let beside = Beside {
            broker_mib: broker.and_then(|b| rss_mib(b.0.id()).ok()),
            simulator_mib: simulator.as_ref().and_then(|s| rss_mib(s.0.id()).ok()),
        };
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            rss_mib: rss_mib(host.0.id()).context("reading the host's VmRSS")?,
            stored: stored(soak_url, Stdio::inherit())?,
            beside,
            plugins: plugin_memory(port).unwrap_or_default(),
        };
        let mib = |m: Option<f64>| m.map_or_else(String::new, |m| format!("{m:.1} MiB"));
        eprintln!(
            "xtask: soak {:>6.0} s  RSS {:>6.1} MiB (plugins {:>5.1})  stored {:>10} ({:.0}/s on average){}",
            sample.seconds,
            sample.rss_mib,
            sample.plugins.values().sum::<f64>(),
            sample.stored,
            sample.stored as f64 / sample.seconds,
            match (beside.broker_mib, beside.simulator_mib) {
                (None, None) => String::new(),
                (broker, simulator) => format!("  beside: broker {} simulator {}", mib(broker), mib(simulator)),
            }
        );
        samples.push(sample);
        next += Duration::from_secs(args.interval);
    }
    host.stop();
    Ok(samples)
}

/// A process the soak started, stopped when dropped (on an error too).
struct Running(Child);

impl Running {
    /// Asks the process to stop (SIGTERM: the host's graceful shutdown) and waits up to 30 s, then
    /// kills it.
    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A copy of the plugins in `folder`, for the soak's host alone: it watches its plugins folder and
/// swaps a plugin whose file changes, so a build writing `dist/plugins` during an hour's soak
/// would swap every plugin mid-run (fresh instances, a second compiled module each) and measure
/// that instead of the host's memory under load.
fn private_plugins(folder: &Path) -> Result<PathBuf> {
    let copy = target_dir().join("bench/soak-plugins");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).with_context(|| format!("remove {}", copy.display()))?;
    }
    std::fs::create_dir_all(&copy)?;
    for entry in std::fs::read_dir(folder).with_context(|| format!("read {}", folder.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "wasm")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, copy.join(name)).with_context(|| format!("copy {}", path.display()))?;
        }
    }
    Ok(copy)
}

/// The plugins' linear memories, from the `/metrics` of the host listening on `port`.
fn plugin_memory(port: u16) -> Result<PluginMemory> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(parse_plugin_memory(&response))
}

/// The `iotstream_plugin_memory_bytes{plugin="NAME",...} BYTES` lines of a Prometheus text
/// exposition, in MiB by plugin.
fn parse_plugin_memory(text: &str) -> PluginMemory {
    let mut memory = PluginMemory::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("iotstream_plugin_memory_bytes{") else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let plugin = labels.split(',').find_map(|l| l.strip_prefix("plugin=\"")?.strip_suffix('"'));
        if let (Some(plugin), Ok(bytes)) = (plugin, value.trim().parse::<f64>()) {
            *memory.entry(plugin.to_owned()).or_default() += bytes / (1024.0 * 1024.0);
        }
    }
    memory
}

/// `VmRSS` of process `pid` (Linux), MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&status).map(|kib| kib / 1024.0).context("no VmRSS line in /proc/PID/status")
}

/// The `VmRSS:` line of a `/proc/PID/status`, in KiB.
fn parse_rss_kib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How long the host may take to store its first readings.
const STARTUP_LIMIT: Duration = Duration::from_secs(180);

/// Readings stored: the sum of the source's stored positions (the topic starts at offset 0); psql's
/// complaints go to `stderr` (none while the host has not made its tables yet).
fn stored(url: &str, stderr: Stdio) -> Result<u64> {
    let output = Command::new("psql")
        .args(["-qAt", "-v", "ON_ERROR_STOP=1", url, "-c"])
        .arg("SELECT coalesce(sum(next_offset), 0) FROM kafka_offsets")
        .stderr(stderr)
        .output()
        .context("cannot run psql")?;
    if !output.status.success() {
        bail!("psql could not read kafka_offsets: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().with_context(|| format!("psql answered {text:?}"))
}

/// Prints the verdict and writes every sample to `target/bench/soak-<time>.json`.
fn report(args: &SoakArgs, source: Option<&Source>, samples: &[Sample]) -> Result<()> {
    let verdict = flatness(samples);
    let last = samples.last();
    let seconds = last.map_or(0.0, |s| s.seconds);
    let stored = last.map_or(0, |s| s.stored);
    println!(
        "\nsoak: {} min at {} readings/s, {} sensors, plugins {}, {}: {} readings stored ({:.0}/s on average)",
        args.minutes,
        args.rate,
        args.sensors,
        args.plugins.display(),
        match source {
            None => "the embedded broker and simulator in the host's process".to_owned(),
            Some(s) => format!(
                "topic {} ({} partitions, {} batches) on {}",
                s.topic,
                args.partitions,
                args.compression.name(),
                broker_name(args, s)
            ),
        },
        stored,
        if seconds > 0.0 { stored as f64 / seconds } else { 0.0 }
    );
    let peak = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let print_verdict = |what: &str, verdict: Option<Flatness>, count: usize| match verdict {
        Some(v) => println!(
            "RSS {what}: mean of the first quarter {:.1} MiB, of the last {:.1} MiB: {:+.1}% ({})",
            v.first_quarter_mib,
            v.last_quarter_mib,
            v.change_percent,
            if v.flat { "flat" } else { "NOT flat" },
        ),
        None => println!("RSS {what}: too few samples ({count}) to compare quarters"),
    };
    print_verdict("over the whole run", verdict, samples.len());
    let steady = after_warm_up(samples, (args.warm_up * 60) as f64);
    let steady_verdict = flatness(steady);
    let growth = growth_mib_per_hour(steady);
    print_verdict(&format!("after the {}-minute warm-up", args.warm_up), steady_verdict, steady.len());
    println!(
        "peak {peak:.1} MiB; growth after the warm-up (least squares) {}",
        growth.map_or_else(|| "-".to_owned(), |g| format!("{g:+.1} MiB an hour"))
    );
    let dir = target_dir().join("bench");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let path = dir.join(format!("soak-{stamp}.json"));
    let beside_peak = |of: fn(&Beside) -> Option<f64>| samples.iter().filter_map(|s| of(&s.beside)).reduce(f64::max);
    if let Some(broker) = beside_peak(|b| b.broker_mib) {
        println!("beside the host, not counted: the broker's peak {broker:.1} MiB");
    }
    if let Some(simulator) = beside_peak(|b| b.simulator_mib) {
        println!("beside the host, not counted: the simulator's peak {simulator:.1} MiB");
    }
    let document = json!({
        "unix_time": stamp, "minutes": args.minutes, "rate": args.rate, "sensors": args.sensors,
        "interval_s": args.interval, "plugins": args.plugins, "flat_percent": FLAT_PERCENT,
        "broker": source.map_or_else(|| "embedded".to_owned(), |s| broker_name(args, s)),
        "topic": source.map(|s| &s.topic), "partitions": source.map(|_| args.partitions),
        "compression": source.map(|_| args.compression.name()),
        "samples": samples.iter().map(|s| json!({
            "seconds": s.seconds, "rss_mib": s.rss_mib, "stored": s.stored,
            "plugins_mib": s.plugins.values().sum::<f64>(), "plugin_mib": s.plugins,
            "broker_rss_mib": s.beside.broker_mib, "simulator_rss_mib": s.beside.simulator_mib,
        })).collect::<Vec<_>>(),
        "verdict": verdict.map(verdict_json),
        "warm_up_minutes": args.warm_up,
        "after_warm_up": steady_verdict.map(verdict_json),
        "growth_after_warm_up_mib_per_hour": growth,
        "peak_rss_mib": peak,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&document)?)?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// The broker a soak ran against, as its report names it.
fn broker_name(args: &SoakArgs, source: &Source) -> String {
    match &args.brokers {
        Some(_) => source.brokers.clone(),
        None => format!("tansu (in memory, started for the run) at {}", source.brokers),
    }
}

/// A verdict as the JSON document keeps it.
fn verdict_json(v: Flatness) -> serde_json::Value {
    json!({
        "first_quarter_mib": v.first_quarter_mib, "last_quarter_mib": v.last_quarter_mib,
        "change_percent": v.change_percent, "flat": v.flat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[f64]) -> Vec<Sample> {
        rss.iter()
            .enumerate()
            .map(|(i, &rss_mib)| Sample {
                seconds: 30.0 * (i + 1) as f64,
                rss_mib,
                stored: 0,
                beside: Beside::default(),
                plugins: PluginMemory::new(),
            })
            .collect()
    }

    #[test]
    fn flat_memory_compares_the_first_quarter_with_the_last() {
        // 8 samples: quarters of 2. First (100 + 102) / 2 = 101, last (104 + 102) / 2 = 103.
        let verdict = flatness(&samples(&[100.0, 102.0, 150.0, 90.0, 101.0, 99.0, 104.0, 102.0])).expect("8 samples");
        assert_eq!(verdict.first_quarter_mib, 101.0);
        assert_eq!(verdict.last_quarter_mib, 103.0);
        assert!((verdict.change_percent - 200.0 / 101.0).abs() < 1e-12, "{}", verdict.change_percent);
        assert!(verdict.flat);
    }

    #[test]
    fn steady_growth_is_not_flat() {
        // 5 samples: quarters of 1 (the middle sample is in neither). 100 to 110: +10%.
        let verdict = flatness(&samples(&[100.0, 103.0, 105.0, 108.0, 110.0])).expect("5 samples");
        assert_eq!((verdict.first_quarter_mib, verdict.last_quarter_mib), (100.0, 110.0));
        assert!((verdict.change_percent - 10.0).abs() < 1e-12);
        assert!(!verdict.flat);
        // Shrinking by as much is not flat either.
        assert!(!flatness(&samples(&[110.0, 105.0, 100.0, 99.0])).expect("4 samples").flat);
    }

    #[test]
    fn the_warm_up_is_left_out_and_the_rest_fitted_per_hour() {
        // Samples at 30 s, 60 s, ... : a warm-up climb to 120 MiB by 90 s, then 0.5 MiB a sample
        // (every 30 s): 60 MiB an hour.
        let all = samples(&[100.0, 110.0, 120.0, 120.5, 121.0, 121.5, 122.0, 122.5]);
        let steady = after_warm_up(&all, 90.0);
        assert_eq!(steady.len(), 6);
        assert_eq!(steady[0].rss_mib, 120.0);
        let growth = growth_mib_per_hour(steady).expect("6 samples");
        assert!((growth - 60.0).abs() < 1e-9, "{growth}");
        // Whole run: (100 + 110) / 2 = 105 against (122 + 122.5) / 2 = 122.25, +16.4%: not flat;
        // after the warm-up, quarters of one sample: 120 against 122.5, +2.08%: flat by the
        // quarters, though the fit shows the climb.
        assert!(!flatness(&all).expect("8").flat);
        let steady_verdict = flatness(steady).expect("6");
        assert_eq!((steady_verdict.first_quarter_mib, steady_verdict.last_quarter_mib), (120.0, 122.5));
        assert!((steady_verdict.change_percent - 2.5 / 120.0 * 100.0).abs() < 1e-9);
        assert!(steady_verdict.flat);
        assert_eq!(after_warm_up(&all, 1e9).len(), 0);
        assert_eq!(growth_mib_per_hour(&all[..1]), None);
        // Flat memory grows by nothing.
        assert_eq!(growth_mib_per_hour(&samples(&[50.0, 50.0, 50.0])), Some(0.0));
    }

    #[test]
    fn fewer_than_four_samples_say_nothing() {
        assert_eq!(flatness(&samples(&[100.0, 200.0, 300.0])), None);
    }

    #[test]
    fn plugin_memory_is_summed_per_plugin_from_the_metrics() {
        let text = "HTTP/1.0 200 OK\r\n\r\n# HELP iotstream_plugin_memory_bytes Linear memory\n\
                    iotstream_plugin_memory_bytes{plugin=\"zscore\",kind=\"detector\"} 1048576\n\
                    iotstream_plugin_memory_bytes_total{plugin=\"zscore\"} 5\n\
                    iotstream_plugin_memory_bytes{kind=\"detector\",plugin=\"isolation-forest\"} 3145728\n\
                    iotstream_plugin_memory_bytes{plugin=\"zscore\",kind=\"detector\"} 524288\n\
                    iotstream_plugin_calls_total{plugin=\"zscore\"} 7\n";
        let memory = parse_plugin_memory(text);
        assert_eq!(memory, PluginMemory::from([("isolation-forest".to_owned(), 3.0), ("zscore".to_owned(), 1.5)]));
        assert!(parse_plugin_memory("").is_empty());
    }

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\tiotstream\nVmPeak:\t 2000000 kB\nVmHWM:\t  150000 kB\nVmRSS:\t  143360 kB\nThreads:\t12\n";
        assert_eq!(parse_rss_kib(status), Some(143_360.0));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }
}
