"""The ``python-deviation`` detector plugin: the entry module componentize-py builds from.

It implements the ``detector-plugin`` world of ``wit/v0.1.0/pipeline.wit`` (contract version 0.1.0): the interface's free function
``info`` here, the resource ``detector-stage`` in ``detector.py`` (imported so that it is part of the
component), the algorithm in ``deviation.py``.
"""

import detector  # noqa: F401  (the module componentize-py takes the resource's class from)
from deviation import STATE_VERSION
from wit_world import exports
from wit_world.imports.types import StageInfo

#: The plugin's own version (semver).
VERSION = "0.1.0"


class Detector(exports.Detector):
    """The exported interface ``iotstream:pipeline/detector``."""

    def info(self) -> StageInfo:
        return StageInfo(name="python-deviation", version=VERSION, state_version=STATE_VERSION)
