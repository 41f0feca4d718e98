"""The WIT resource ``detector-stage``: converts between the contract's types and ``deviation``.

componentize-py looks up the class implementing a resource of an exported interface in the module
named after the interface, so this module is ``detector`` (for ``iotstream:pipeline/detector``) and
its class is ``DetectorStage`` (for ``resource detector-stage``). A ``result<_, stage-error>`` is
refused by raising ``Err(stage-error)``; any other exception is a trap, which the host counts as a
plugin fault and answers by re-creating the instance.
"""

from typing import Dict, List, Tuple

from componentize_py_types import Err
from wit_world.exports import detector
from wit_world.exports.detector import Detection, Verdict
from wit_world.imports.types import (
    Reading,
    Sensor,
    SensorType,
    StageError_InvalidConfig,
    StageError_InvalidInput,
    StageError_InvalidState,
)

from deviation import Config, ConfigError, MeanDeviation, StateError

#: WIT sensor types by the names the configuration and the state use.
SENSOR_TYPE_NAMES = {
    SensorType.TEMPERATURE: "temperature",
    SensorType.HUMIDITY: "humidity",
    SensorType.AIR_QUALITY: "air-quality",
    SensorType.PRESSURE: "pressure",
    SensorType.CO2: "co2",
}


class DetectorStage(detector.DetectorStage):
    """One running detector: the algorithm's state and the sensors declared to this instance."""

    def __init__(self, config: Config) -> None:
        self.detector = MeanDeviation(config)
        #: Sensor key -> (sensor id, sensor type name). Keys are valid for this instance only.
        self.sensors: Dict[int, Tuple[str, str]] = {}

    @classmethod
    def create(cls, config: str) -> "DetectorStage":
        try:
            return cls(Config.from_json(config))
        except ConfigError as err:
            raise Err(StageError_InvalidConfig(str(err))) from None

    def declare_sensors(self, sensors: List[Sensor]) -> None:
        for sensor in sensors:
            self.sensors[sensor.key] = (sensor.sensor_id, SENSOR_TYPE_NAMES[sensor.sensor_type])

    def detect(self, readings: List[Reading]) -> List[Detection]:
        # Check every key before judging any reading: a refused call must leave the state as it was.
        for index, reading in enumerate(readings):
            if reading.sensor not in self.sensors:
                raise Err(StageError_InvalidInput(f"reading {index} names undeclared sensor key {reading.sensor}"))
        detections = []
        for reading in readings:
            sensor_id, sensor_type = self.sensors[reading.sensor]
            judgement = self.detector.judge(sensor_id, sensor_type, reading.value)
            if judgement.score is None:
                detections.append(Detection(0.0, Verdict.WARMING_UP, None))
            else:
                verdict = Verdict.ANOMALY if judgement.anomaly else Verdict.NORMAL
                detections.append(Detection(judgement.score, verdict, None))
        return detections

    def export_state(self) -> bytes:
        return self.detector.export_state()

    def import_state(self, state: bytes) -> None:
        try:
            self.detector.import_state(state)
        except StateError as err:
            raise Err(StageError_InvalidState(str(err))) from None
        # The host declares every sensor again, with keys of its own.
        self.sensors = {}
