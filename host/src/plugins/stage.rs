//! One trait over the generated stage worlds of every contract version. `bindgen!` makes a type per
//! world and version ([`DetectorPlugin`], [`AggregatorPlugin`], and version 0.2.0's columnar ones)
//! whose calls are the same but for the stage's work and the shape of a batch; [`StageBindings`]
//! puts them behind one interface in the host's types, so the kind and version are matched once,
//! in [`instantiate`], and every other call site is blind to both.

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{AsContextMut, Store};

use super::StageKind;
use super::bindings::aggregator::AggregatorPlugin;
use super::bindings::columnar::detector::DetectorPlugin as ColumnarDetector;
use super::bindings::columnar::{self, aggregator::AggregatorPlugin as ColumnarAggregator};
use super::bindings::detector::DetectorPlugin;
use super::bindings::{ContractVersion, Detection, Reading, Sensor, StageError, StageInfo, WindowAggregate};
use super::output;
use super::runtime::StageCtx;

/// A wasmtime call's outcome: the runtime's failure (a trap, the deadline), else the stage's answer.
pub(super) type Call<T> = wasmtime::Result<Result<T, StageError>>;

/// A detector's answer, in the shape of the contract version it was built against.
pub(super) enum DetectorAnswer {
    /// Version 0.1.0: a detection per reading.
    Records(Vec<Detection>),
    /// Version 0.2.0: scores, the indices of anomalies and of readings warming up, model runs.
    Columns(columnar::Detections),
}

impl DetectorAnswer {
    /// The answer as a detection per reading of a batch of `readings`, or what breaks the
    /// contract's shape (the count of detections is checked with the rest of the answer, in
    /// [`output::check_detections`]).
    pub(super) fn into_detections(self, readings: usize) -> Result<Vec<Detection>, String> {
        match self {
            DetectorAnswer::Records(detections) => Ok(detections),
            DetectorAnswer::Columns(columns) => output::detections_of_columns(columns, readings),
        }
    }
}

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
    fn detect(&self, _store: &mut Store<StageCtx>, _stage: ResourceAny, _readings: &[Reading]) -> Call<DetectorAnswer> {
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

/// Instantiates `component` as a stage of `kind` built against `contract` in `store`: the one
/// place the kind and the version are matched.
pub(super) fn instantiate(
    kind: StageKind,
    contract: ContractVersion,
    store: &mut Store<StageCtx>,
    component: &Component,
    linker: &Linker<StageCtx>,
) -> wasmtime::Result<Box<dyn StageBindings>> {
    let store = store.as_context_mut();
    Ok(match (contract, kind) {
        (ContractVersion::Records, StageKind::Detector) => {
            Box::new(DetectorPlugin::instantiate(store, component, linker)?)
        }
        (ContractVersion::Records, StageKind::Aggregator) => {
            Box::new(AggregatorPlugin::instantiate(store, component, linker)?)
        }
        (ContractVersion::Columns, StageKind::Detector) => {
            Box::new(ColumnarDetector::instantiate(store, component, linker)?)
        }
        (ContractVersion::Columns, StageKind::Aggregator) => {
            Box::new(ColumnarAggregator::instantiate(store, component, linker)?)
        }
    })
}

/// The calls every world has, for the generated type whose interface accessor is `$interface` and
/// whose stage resource accessor is `$resource`; `$sensors` is the declared sensors (`&[Sensor]`,
/// named `$declared`) as that version's bindings take them. Answers come back in the host's types
/// (`Into`, the identity for version 0.1.0).
macro_rules! common_calls {
    ($interface:ident, $resource:ident, |$declared:ident| $sensors:expr) => {
        fn info(&self, store: &mut Store<StageCtx>) -> wasmtime::Result<StageInfo> {
            Ok(self.$interface().call_info(store)?.into())
        }
        fn create(&self, store: &mut Store<StageCtx>, config: &str) -> Call<ResourceAny> {
            Ok(self.$interface().$resource().call_create(store, config)?.map_err(Into::into))
        }
        fn declare_sensors(
            &self,
            store: &mut Store<StageCtx>,
            stage: ResourceAny,
            $declared: &[Sensor],
        ) -> wasmtime::Result<()> {
            self.$interface().$resource().call_declare_sensors(store, stage, $sensors)
        }
        fn export_state(&self, store: &mut Store<StageCtx>, stage: ResourceAny) -> wasmtime::Result<Vec<u8>> {
            self.$interface().$resource().call_export_state(store, stage)
        }
        fn import_state(&self, store: &mut Store<StageCtx>, stage: ResourceAny, state: &[u8]) -> Call<()> {
            Ok(self.$interface().$resource().call_import_state(store, stage, state)?.map_err(Into::into))
        }
    };
}

impl StageBindings for DetectorPlugin {
    common_calls!(iotstream_pipeline_detector, detector_stage, |sensors| sensors);

    fn detect(&self, store: &mut Store<StageCtx>, stage: ResourceAny, readings: &[Reading]) -> Call<DetectorAnswer> {
        let answer = self.iotstream_pipeline_detector().detector_stage().call_detect(store, stage, readings)?;
        Ok(answer.map(DetectorAnswer::Records))
    }
}

impl StageBindings for AggregatorPlugin {
    common_calls!(iotstream_pipeline_aggregator, aggregator_stage, |sensors| sensors);

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

impl StageBindings for ColumnarDetector {
    common_calls!(iotstream_pipeline_detector, detector_stage, |sensors| &columnar::sensors(sensors));

    fn detect(&self, store: &mut Store<StageCtx>, stage: ResourceAny, readings: &[Reading]) -> Call<DetectorAnswer> {
        let columns = columnar::readings(readings);
        let answer = self.iotstream_pipeline_detector().detector_stage().call_detect(store, stage, &columns)?;
        Ok(answer.map(DetectorAnswer::Columns).map_err(Into::into))
    }
}

impl StageBindings for ColumnarAggregator {
    common_calls!(iotstream_pipeline_aggregator, aggregator_stage, |sensors| &columnar::sensors(sensors));

    fn aggregate(
        &self,
        store: &mut Store<StageCtx>,
        stage: ResourceAny,
        readings: &[Reading],
    ) -> Call<Vec<WindowAggregate>> {
        let columns = columnar::readings(readings);
        let answer = self.iotstream_pipeline_aggregator().aggregator_stage().call_aggregate(store, stage, &columns)?;
        Ok(answer.map(|aggregates| aggregates.into_iter().map(Into::into).collect()).map_err(Into::into))
    }
    fn tick(&self, store: &mut Store<StageCtx>, stage: ResourceAny, now_ms: i64) -> Call<Vec<WindowAggregate>> {
        let aggregates = self.iotstream_pipeline_aggregator().aggregator_stage().call_tick(store, stage, now_ms)?;
        Ok(Ok(aggregates.into_iter().map(Into::into).collect()))
    }
}
