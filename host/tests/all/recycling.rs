//! An instance's memory brought back at checkpoints (docs/plugins.md, "Memory"): a stage whose
//! linear memory grows past its ceiling is replaced by a fresh instance holding the state it just
//! exported, which goes on exactly where the old one was; a stage whose memory stays is left alone.
//! Test plugin: `misbehaving` (`leak` keeps 256 KiB of its memory a call; `behave` keeps none).

use std::time::Duration;

use iotstream::plugins::bindings::Reading as WitReading;
use iotstream::plugins::{Clock, Plugin, PluginLimits, PluginRuntime, SensorCatalog, memory_ceiling};
use iotstream::reading::SensorType;

use crate::support::{reading, test_plugin_path};

/// How long an instance runs before its memory settles, here.
const SETTLE: Duration = Duration::from_secs(600);

/// A runtime whose instances settle after [`SETTLE`] on `clock`.
fn runtime(clock: &Clock) -> PluginRuntime {
    PluginRuntime::with_limits(PluginLimits { memory_settle: SETTLE, clock: clock.clone(), ..PluginLimits::default() })
        .expect("runtime")
}

fn load(runtime: &PluginRuntime, mode: &str) -> Plugin {
    let config = format!(r#"{{"mode": "{mode}"}}"#);
    runtime.load_with_config(&test_plugin_path("misbehaving"), Some(config)).expect("loads")
}

/// Three readings of sensor `a` (the plugin scores each with `a`'s count so far).
fn three_of_a(catalog: &mut SensorCatalog) -> Vec<WitReading> {
    (0..3).map(|i| catalog.wit_reading(&reading("a", SensorType::Temperature, "lab_1", 1_000 * i, 20.0))).collect()
}

fn scores(plugin: &mut Plugin, catalog: &SensorCatalog, batch: &[WitReading]) -> Vec<f64> {
    plugin.detect(catalog, batch).expect("detects").iter().map(|d| d.score).collect()
}

#[test]
fn a_plugin_whose_memory_grows_is_replaced_at_a_checkpoint_by_a_fresh_one_holding_its_state() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batch = three_of_a(&mut catalog);
    let mut leaky = load(&runtime, "leak");
    let start = leaky.metrics().memory_bytes as usize;
    // Before it settles, no growth replaces it: 8 calls keep 2 MiB, past any ceiling of its start.
    for call in 0..8 {
        let n = 3.0 * f64::from(call);
        assert_eq!(scores(&mut leaky, &catalog, &batch), [n + 1.0, n + 2.0, n + 3.0]);
        leaky.checkpoint_state(&catalog).expect("exported");
    }
    let young = leaky.metrics();
    assert!(young.memory_bytes as usize > memory_ceiling(start), "{young:?}");
    assert_eq!(young.memory_replacements, 0);
    // The first checkpoint once it has run for SETTLE settles it: its ceiling counts from then.
    clock.advance(SETTLE);
    leaky.checkpoint_state(&catalog).expect("exported");
    let settled = leaky.metrics().memory_bytes as usize;
    assert_eq!(leaky.metrics().memory_replacements, 0);
    // One more call keeps 256 KiB: under the ceiling (at least 512 KiB more), the instance stays.
    assert_eq!(scores(&mut leaky, &catalog, &batch), [25.0, 26.0, 27.0]);
    leaky.checkpoint_state(&catalog).expect("exported");
    let under = leaky.metrics();
    assert_eq!(under.memory_replacements, 0);
    assert!(
        under.memory_bytes as usize > settled && under.memory_bytes as usize <= memory_ceiling(settled),
        "{under:?}"
    );
    // Leak past the ceiling (each call counts a's readings on).
    let mut count = 27.0;
    while (leaky.metrics().memory_bytes as usize) <= memory_ceiling(settled) {
        assert_eq!(scores(&mut leaky, &catalog, &batch), [count + 1.0, count + 2.0, count + 3.0]);
        count += 3.0;
        assert!(count < 300.0, "the leak never passed the ceiling: {:?}", leaky.metrics());
    }
    let state = leaky.checkpoint_state(&catalog).expect("exported");
    let replaced = leaky.metrics();
    assert_eq!((replaced.memory_replacements, replaced.restarts, replaced.errors), (1, 0, 0), "{replaced:?}");
    // The fresh instance holds the state and what a fresh instance takes, not what was leaked.
    assert!(
        replaced.memory_bytes as usize <= memory_ceiling(start) && (replaced.memory_bytes as usize) < settled,
        "{replaced:?}"
    );
    assert_eq!(leaky.last_good_state(), Some(&state[..]));
    // It goes on exactly: the counts carried over, the sensor declared to it again.
    assert_eq!(scores(&mut leaky, &catalog, &batch), [count + 1.0, count + 2.0, count + 3.0]);
    // The replacement settles anew: however it grows before, it is not replaced until it has run
    // for SETTLE.
    for _ in 0..8 {
        scores(&mut leaky, &catalog, &batch);
        leaky.checkpoint_state(&catalog).expect("exported");
    }
    assert_eq!(leaky.metrics().memory_replacements, 1);
}

#[test]
fn a_plugin_whose_memory_stays_is_never_replaced() {
    let clock = Clock::manual();
    let runtime = runtime(&clock);
    let mut catalog = SensorCatalog::default();
    let batch = three_of_a(&mut catalog);
    let mut steady = load(&runtime, "behave");
    for call in 0..50 {
        let n = 3.0 * f64::from(call);
        assert_eq!(scores(&mut steady, &catalog, &batch), [n + 1.0, n + 2.0, n + 3.0]);
        steady.checkpoint_state(&catalog).expect("exported");
        clock.advance(SETTLE / 4);
    }
    let m = steady.metrics();
    assert_eq!((m.memory_replacements, m.restarts), (0, 0), "{m:?}");
}

/// `iotstream bench-memory` over 3 minutes of event time, a sample each minute, in 3 lanes of the
/// built z-score, with the further arguments `more`.
fn replay_zscore(more: &[&str]) -> Vec<iotstream::commands::bench_memory::MemorySample> {
    use clap::Parser;
    use iotstream::commands::bench_memory::{BenchMemoryConfig, bench_memory};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: BenchMemoryConfig,
    }
    let built = crate::support::built_plugins();
    let args = ["bench-memory", "--plugin", "zscore", "--minutes", "3", "--every", "1", "--lanes", "3"];
    let args = args.iter().chain(more).copied().chain(["--builtin-plugins", built.to_str().expect("utf-8")]);
    bench_memory(&Cli::try_parse_from(args).expect("parses").config).expect("replays")
}

/// `iotstream bench-memory` replays simulated minutes through one instance a lane, as a host's
/// lanes run it: the z-score keeps a fixed state per sensor, so its memory is what it was in its
/// first minute at every later one, in every lane; it exports a state at each checkpoint, and none
/// with checkpoints off.
#[test]
fn bench_memory_replays_lanes_whose_fixed_state_keeps_its_memory() {
    let samples = replay_zscore(&["--sensors", "5", "--rate", "500"]);
    assert_eq!(samples.iter().map(|s| s.minute).collect::<Vec<_>>(), [1, 2, 3]);
    let first = &samples[0];
    for sample in &samples {
        assert_eq!(sample.lane_bytes, first.lane_bytes, "minute {}", sample.minute);
        assert_eq!(sample.total_bytes, sample.lane_bytes.iter().sum::<u64>());
        assert_eq!(sample.replacements, 0);
        assert!(sample.state_bytes > 0);
    }
    assert_eq!(first.lane_bytes.len(), 3);
    // Without checkpoints, no state is exported.
    let unchecked = replay_zscore(&["--sensors", "5", "--rate", "500", "--checkpoint-interval", "0s"]);
    assert!(unchecked.iter().all(|s| s.state_bytes == 0), "{unchecked:?}");
}

/// A lane falling behind its broker takes ever larger batches. Passed to the plugin in calls of at
/// most 256 readings (the default), its memory stays what it was in the first minute while its
/// batches grow tenfold; passed whole, every lane keeps room for the largest batch it took, at
/// least its columns (20 bytes a reading: a key, a timestamp, a value).
#[test]
fn a_lane_s_memory_does_not_follow_its_batches_as_they_grow() {
    // 500 readings/s over 5 sensors in 3 lanes: lanes 0 and 1 take two sensors, 200 readings/s,
    // lane 2 one. The linger grows from 50 ms to 60 s over the 3 minutes, so the largest batch
    // from over 2,000 readings in the first minute to over 7,000 in the last (lane 2's half that).
    let growing = ["--sensors", "5", "--rate", "500", "--linger-ms", "50", "--linger-ms-at-end", "60000"];
    let split = replay_zscore(&growing);
    let whole = replay_zscore(&[&growing[..], &["--readings-per-call", "1000000"]].concat());
    let largest: Vec<usize> = split.iter().map(|s| s.largest_batch).collect();
    assert!(largest[0] > 2_000 && largest[2] > 7_000 && largest[2] > 3 * largest[0], "{largest:?}");
    assert_eq!(whole.iter().map(|s| s.largest_batch).collect::<Vec<_>>(), largest);
    for sample in &split {
        assert_eq!(sample.lane_bytes, split[0].lane_bytes, "minute {}", sample.minute);
    }
    for (lane, (&whole, &split)) in whole[2].lane_bytes.iter().zip(&split[2].lane_bytes).enumerate() {
        assert!(whole >= split + 20 * 3_000, "lane {lane}: {whole} bytes whole, {split} split");
    }
}
