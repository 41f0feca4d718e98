//! Lanes: every stage runs once per partition this host owns. A partition's messages share a
//! sensor (the key is the sensor id), so a lane holds every reading of its sensors, and its
//! state (z-scores per sensor, a forest per sensor type trained on its sensors, partial windows)
//! belongs to the partition alone: when the consumer group moves the partition to another host,
//! the lane's checkpoint moves with it, and nothing of it has to be split or merged.
//!
//! The loaded plugins themselves are the prototype: a lane's stages are new instances of them
//! (an instantiation, not a compile), and a plugin change (hot swap, admin action) applies to the
//! prototype and to every lane, each handing its own state over.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iotstream_api::{PluginState, PluginStatus};
use tracing::error;

use super::stages::{Installed, Stages};
use crate::kafka::BEGINNING;
use crate::plugins::Plugin;
use crate::store::Fence;

/// One partition's stages and where they stand.
pub(super) struct Lane {
    /// The stages that see only this partition's messages.
    pub(super) stages: Stages,
    /// The partition's next offset: what the stages' state includes ([`BEGINNING`]: nothing yet).
    pub(super) next_offset: i64,
    /// The number of the last batch of this lane the stages processed.
    pub(super) batch_seq: i64,
    /// The newest batch logged when the lane started: a replay forms batches up to it again.
    pub(super) logged_until: i64,
    /// When this lane last checkpointed (`None`: not yet; its first batch always does).
    pub(super) last_checkpoint: Option<Instant>,
    /// This host's ownership count of the partition, which its batch transactions check.
    pub(super) generation: i64,
    /// The partition's stored position when this host was given it: a message at or past it
    /// cannot be stored yet (a batch of only such messages is [`crate::store::BatchRows::fresh`]).
    /// `i64::MAX` until known: nothing is taken for new.
    pub(super) fresh_from: i64,
}

/// How far into the checkpoint interval lane `rank` of `lanes` starts, so that the lanes'
/// checkpoints come due spread evenly over the interval. A checkpoint holds every stage's state (the
/// forest's is about a megabyte a lane): written in one batch's transaction for every lane at once,
/// it held that batch, and the batches behind it, for hundreds of milliseconds. The lane then
/// checkpoints every `interval` from its shifted start: never longer apart than the interval, so a
/// crash replays no more than before.
pub(super) fn checkpoint_phase(rank: usize, lanes: usize, interval: Duration) -> Duration {
    if lanes <= 1 {
        return Duration::ZERO;
    }
    let rank = u32::try_from(rank % lanes).unwrap_or(0);
    let lanes = u32::try_from(lanes).unwrap_or(u32::MAX);
    interval / lanes * rank
}

/// The prototype plugins and a lane per owned partition.
#[derive(Default)]
pub(super) struct Lanes {
    /// The loaded plugins, never called on readings: what new lanes are instantiated from.
    pub(super) prototype: Stages,
    pub(super) owned: BTreeMap<i32, Lane>,
}

impl Lanes {
    /// A lane for `partition` with fresh instances of every plugin, at the start of the partition
    /// (the caller restores its checkpoint).
    pub(super) fn new_lane(&self, partition: i32, generation: i64) -> Lane {
        let mut stages = Stages::default();
        for plugin in self.prototype.all() {
            match plugin.new_instance(None) {
                Ok(instance) => stages.push(instance),
                Err(err) => error!(
                    plugin = plugin.name(),
                    partition,
                    error = %err,
                    "could not instantiate the plugin for this partition: its stage is missing from the lane"
                ),
            }
        }
        stages.partition = partition;
        Lane {
            stages,
            next_offset: BEGINNING,
            batch_seq: 0,
            logged_until: 0,
            last_checkpoint: None,
            generation,
            fresh_from: i64::MAX,
        }
    }

    /// What a batch transaction writing `partitions` checks.
    pub(super) fn fence(&self, lineage: i16, partitions: impl IntoIterator<Item = i32>) -> Fence {
        let generations =
            partitions.into_iter().filter_map(|p| self.owned.get(&p).map(|lane| (p, lane.generation))).collect();
        Fence { lineage, generations }
    }

    /// The fence of every owned lane.
    pub(super) fn fence_all(&self, lineage: i16) -> Fence {
        self.fence(lineage, self.owned.keys().copied())
    }

    /// Installs `plugin` in the prototype and a new instance of it in every lane (each lane's old
    /// instance hands its own state over); what installing it in the prototype did.
    pub(super) fn install(&mut self, plugin: Plugin) -> Installed {
        for (partition, lane) in &mut self.owned {
            match plugin.new_instance(None) {
                Ok(instance) => {
                    if let Installed::Fresh(why) = lane.stages.install(instance) {
                        tracing::info!(plugin = plugin.name(), partition, "the lane's stage starts fresh: {why}");
                    }
                }
                Err(err) => {
                    error!(plugin = plugin.name(), partition, error = %err, "could not instantiate the new version for this partition: its old version stops");
                    lane.stages.remove(plugin.name());
                }
            }
        }
        self.prototype.install(plugin)
    }

    /// Removes the plugin named `name` everywhere; whether it ran.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        for lane in self.owned.values_mut() {
            lane.stages.remove(name);
        }
        self.prototype.remove(name)
    }

    /// Whether a plugin named `name` is loaded.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.prototype.contains(name)
    }

    /// The loaded plugin named `name` (the prototype: its kind, manifest, layer).
    pub(super) fn loaded(&mut self, name: &str) -> Option<&mut Plugin> {
        self.prototype.get_mut(name)
    }

    /// Every instance of the plugin named `name`, in every lane.
    pub(super) fn instances(&mut self, name: &str) -> Vec<&mut Plugin> {
        self.owned.values_mut().filter_map(|lane| lane.stages.get_mut(name)).collect()
    }

    /// Every loaded plugin's status, summed over its instances in the lanes (the prototype's alone
    /// while this host owns no partition): calls, readings and errors add up, the state is the
    /// worst of the instances', call-time percentiles the highest.
    pub(super) fn statuses(&self) -> Vec<PluginStatus> {
        let mut statuses = self.prototype.statuses();
        if self.owned.is_empty() {
            return statuses;
        }
        // Every lane's statuses once (this runs with every batch), grouped by plugin.
        let mut by_plugin: std::collections::HashMap<String, Vec<PluginStatus>> = std::collections::HashMap::new();
        for status in self.owned.values().flat_map(|lane| lane.stages.statuses()) {
            by_plugin.entry(status.name.clone()).or_default().push(status);
        }
        for status in &mut statuses {
            let instances = by_plugin.get(&status.name).map_or(&[][..], Vec::as_slice);
            *status = merged(status, instances);
        }
        statuses
    }
}

/// `prototype`'s status with the counts of `instances` (the lanes' instances of it).
fn merged(prototype: &PluginStatus, instances: &[PluginStatus]) -> PluginStatus {
    let mut merged = PluginStatus {
        calls: 0,
        readings_in: 0,
        outputs: 0,
        errors: 0,
        restarts: 0,
        memory_replacements: 0,
        skipped_readings: 0,
        memory_bytes: 0,
        state_bytes: 0,
        busy_micros: 0,
        consecutive_failures: 0,
        p50_call_micros: 0.0,
        p99_call_micros: 0.0,
        call_micros_buckets: vec![0; prototype.call_micros_buckets.len()],
        ..prototype.clone()
    };
    let severity = |state: PluginState| match state {
        PluginState::Running => 0,
        PluginState::Backoff => 1,
        PluginState::Quarantined => 2,
    };
    for instance in instances {
        merged.calls += instance.calls;
        merged.readings_in += instance.readings_in;
        merged.outputs += instance.outputs;
        merged.errors += instance.errors;
        merged.restarts += instance.restarts;
        merged.memory_replacements += instance.memory_replacements;
        merged.skipped_readings += instance.skipped_readings;
        merged.memory_bytes += instance.memory_bytes;
        merged.state_bytes += instance.state_bytes;
        merged.busy_micros += instance.busy_micros;
        merged.consecutive_failures = merged.consecutive_failures.max(instance.consecutive_failures);
        merged.p50_call_micros = merged.p50_call_micros.max(instance.p50_call_micros);
        merged.p99_call_micros = merged.p99_call_micros.max(instance.p99_call_micros);
        for (sum, count) in merged.call_micros_buckets.iter_mut().zip(&instance.call_micros_buckets) {
            *sum += count;
        }
        if severity(instance.state) > severity(merged.state) {
            merged.state = instance.state;
        }
        if instance.last_error.is_some() {
            merged.last_error.clone_from(&instance.last_error);
        }
    }
    merged.mean_call_micros = if merged.calls == 0 { 0.0 } else { merged.busy_micros as f64 / merged.calls as f64 };
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_api::StageKind;

    fn status(calls: u64, busy: u64, state: PluginState, p99: f64, buckets: Vec<u64>) -> PluginStatus {
        PluginStatus {
            name: "zscore".into(),
            kind: StageKind::Detector,
            version: "1".into(),
            contract: "0.2.0".into(),
            layer: None,
            calls,
            readings_in: calls * 10,
            outputs: calls * 10,
            errors: 0,
            restarts: 0,
            memory_replacements: 0,
            mean_call_micros: 0.0,
            last_error: None,
            state,
            consecutive_failures: 0,
            skipped_readings: 0,
            memory_bytes: 1000,
            state_bytes: 10,
            p50_call_micros: p99 / 2.0,
            p99_call_micros: p99,
            busy_micros: busy,
            call_micros_buckets: buckets,
        }
    }

    #[test]
    fn a_plugins_status_sums_its_lanes_and_shows_the_worst_state() {
        let prototype = status(0, 0, PluginState::Running, 0.0, vec![0, 0]);
        let lanes = [
            status(3, 300, PluginState::Running, 50.0, vec![1, 3]),
            status(1, 500, PluginState::Quarantined, 400.0, vec![0, 1]),
        ];
        let merged = merged(&prototype, &lanes);
        assert_eq!((merged.calls, merged.readings_in, merged.busy_micros), (4, 40, 800));
        assert_eq!(merged.mean_call_micros, 200.0);
        assert_eq!(merged.state, PluginState::Quarantined);
        assert_eq!((merged.p99_call_micros, merged.memory_bytes), (400.0, 2000));
        assert_eq!(merged.call_micros_buckets, vec![1, 4]);
    }

    #[test]
    fn the_lanes_checkpoint_phases_spread_over_the_interval() {
        let every = Duration::from_secs(10);
        let phases: Vec<Duration> = (0..4).map(|rank| checkpoint_phase(rank, 4, every)).collect();
        assert_eq!(phases, [0, 2_500, 5_000, 7_500].map(Duration::from_millis));
        assert_eq!(checkpoint_phase(0, 1, every), Duration::ZERO);
        assert_eq!(checkpoint_phase(0, 0, every), Duration::ZERO);
        // 3 lanes of 1 s: 0, 333.33 ms, 666.67 ms (whole nanoseconds).
        assert_eq!(checkpoint_phase(2, 3, Duration::from_secs(1)), Duration::from_nanos(666_666_666));
    }
}
