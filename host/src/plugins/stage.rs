//! One trait over the two generated stage worlds. `bindgen!` makes a type per world
//! ([`DetectorPlugin`], [`AggregatorPlugin`]) whose calls are the same but for the stage's work;
//! [`StageBindings`] puts them behind one interface, so the kind is matched once, in
//! [`instantiate`], and every other call site is kind-blind.

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{AsContextMut, Store};

use super::StageKind;
use super::bindings::aggregator::AggregatorPlugin;
use super::bindings::detector::DetectorPlugin;
use super::bindings::{Detection, Reading, Sensor, StageError, StageInfo, WindowAggregate};
use super::runtime::StageCtx;

/// A wasmtime call's outcome: the runtime's failure (a trap, the deadline), else the stage's answer.
pub(super) type Call<T> = wasmtime::Result<Result<T, StageError>>;

/// The calls the host makes on a stage instance, whatever its kind. A call that does not exist for
/// the kind answers as the contract says a stage refuses what it cannot do (`invalid-input`), or,
/// for `tick`, with nothing to emit.
pub(super) trait StageBindings: Send + Sync {
    /// `info`.
    fn info(&self, store: &mut Store<StageCtx>) -> wasmtime::Result<StageInfo>;
    /// `create`: the stage resource, from its configuration.
    fn create(&self, store: &mut Store<StageCtx>, config: &str) -> Call<ResourceAny>;
    /// `declare-sensors`.
    fn declare_sensors(
        &self,
        store: &mut Store<StageCtx>,
        stage: ResourceAny,
        sensors: &[Sensor],
    ) -> wasmtime::Result<()>;
    /// `export-state`.
    fn export_state(&self, store: &mut Store<StageCtx>, stage: ResourceAny) -> wasmtime::Result<Vec<u8>>;
    /// `import-state`.
    fn import_state(&self, store: &mut Store<StageCtx>, stage: ResourceAny, state: &[u8]) -> Call<()>;
    /// A detector's `detect`.
    fn detect(&self, _store: &mut Store<StageCtx>, _stage: ResourceAny, _readings: &[Reading]) -> Call<Vec<Detection>> {
        Ok(Err(StageError::InvalidInput("not a detector".into())))
    }
    /// An aggregator's `aggregate`.
    fn aggregate(
        &self,
        _store: &mut Store<StageCtx>,
        _stage: ResourceAny,
        _readings: &[Reading],
    ) -> Call<Vec<WindowAggregate>> {
        Ok(Err(StageError::InvalidInput("not an aggregator".into())))
    }
    /// An aggregator's `tick`.
    fn tick(&self, _store: &mut Store<StageCtx>, _stage: ResourceAny, _now_ms: i64) -> Call<Vec<WindowAggregate>> {
        Ok(Ok(Vec::new()))
    }
}

/// Instantiates `component` as a stage of `kind` in `store`: the one place the kind is matched.
pub(super) fn instantiate(
    kind: StageKind,
    store: &mut Store<StageCtx>,
    component: &Component,
    linker: &Linker<StageCtx>,
) -> wasmtime::Result<Box<dyn StageBindings>> {
    Ok(match kind {
        StageKind::Detector => Box::new(DetectorPlugin::instantiate(store.as_context_mut(), component, linker)?),
        StageKind::Aggregator => Box::new(AggregatorPlugin::instantiate(store.as_context_mut(), component, linker)?),
    })
}

/// The calls both worlds have, for the generated type whose interface accessor is `$interface` and
/// whose stage resource accessor is `$resource`.
macro_rules! common_calls {
    ($interface:ident, $resource:ident) => {
        fn info(&self, store: &mut Store<StageCtx>) -> wasmtime::Result<StageInfo> {
            self.$interface().call_info(store)
        }
        fn create(&self, store: &mut Store<StageCtx>, config: &str) -> Call<ResourceAny> {
            self.$interface().$resource().call_create(store, config)
        }
        fn declare_sensors(
            &self,
            store: &mut Store<StageCtx>,
            stage: ResourceAny,
            sensors: &[Sensor],
        ) -> wasmtime::Result<()> {
            self.$interface().$resource().call_declare_sensors(store, stage, sensors)
        }
        fn export_state(&self, store: &mut Store<StageCtx>, stage: ResourceAny) -> wasmtime::Result<Vec<u8>> {
            self.$interface().$resource().call_export_state(store, stage)
        }
        fn import_state(&self, store: &mut Store<StageCtx>, stage: ResourceAny, state: &[u8]) -> Call<()> {
            self.$interface().$resource().call_import_state(store, stage, state)
        }
    };
}

impl StageBindings for DetectorPlugin {
    common_calls!(iotstream_pipeline_detector, detector_stage);

    fn detect(&self, store: &mut Store<StageCtx>, stage: ResourceAny, readings: &[Reading]) -> Call<Vec<Detection>> {
        self.iotstream_pipeline_detector().detector_stage().call_detect(store, stage, readings)
    }
}

impl StageBindings for AggregatorPlugin {
    common_calls!(iotstream_pipeline_aggregator, aggregator_stage);

    fn aggregate(
        &self,
        store: &mut Store<StageCtx>,
        stage: ResourceAny,
        readings: &[Reading],
    ) -> Call<Vec<WindowAggregate>> {
        self.iotstream_pipeline_aggregator().aggregator_stage().call_aggregate(store, stage, readings)
    }
    fn tick(&self, store: &mut Store<StageCtx>, stage: ResourceAny, now_ms: i64) -> Call<Vec<WindowAggregate>> {
        Ok(Ok(self.iotstream_pipeline_aggregator().aggregator_stage().call_tick(store, stage, now_ms)?))
    }
}
