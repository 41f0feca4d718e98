"""Unit tests of the algorithm, natively: ``python3 -m unittest`` in this folder (``cargo xtask test``
runs them). Expected values are computed by hand in the comments."""

import json
import math
import unittest

from deviation import WARMING_UP, Config, ConfigError, Judgement, MeanDeviation, StateError


def detector(**config) -> MeanDeviation:
    return MeanDeviation(Config.from_json(json.dumps(config)))


class JudgementTest(unittest.TestCase):
    def test_scores_against_the_values_before_and_warms_up_first(self):
        d = detector(window=4, min_history=4)
        for value in [10.0, 12.0, 10.0, 12.0]:
            self.assertEqual(d.judge("t1", "temperature", value), WARMING_UP)
        # History 10, 12, 10, 12: mean 11, mean absolute deviation 1; |15 - 11| / 1 = 4, not above 4.
        self.assertEqual(d.judge("t1", "temperature", 15.0), Judgement(4.0, False))
        # History 12, 10, 12, 15: mean 12.25, deviations .25 2.25 .25 2.75, MAD 1.375; 18 -> 5.75 / 1.375
        # (about 4.18): an anomaly.
        self.assertEqual(d.judge("t1", "temperature", 18.0), Judgement(5.75 / 1.375, True))

    def test_sensors_are_independent_and_thresholds_follow_the_type(self):
        d = detector(window=3, min_history=2, thresholds={"co2": 10})
        for sensor, sensor_type in [("a", "temperature"), ("b", "co2")]:
            d.judge(sensor, sensor_type, 1.0)
            d.judge(sensor, sensor_type, 3.0)
        # Both: mean 2, MAD 1, so 7 scores 5: above the default 4, below co2's 10.
        self.assertEqual(d.judge("a", "temperature", 7.0), Judgement(5.0, True))
        self.assertEqual(d.judge("b", "co2", 7.0), Judgement(5.0, False))

    def test_constant_history_gives_finite_scores(self):
        d = detector(window=5, min_history=5)
        for _ in range(5):
            d.judge("stuck", "pressure", 1013.0)
        self.assertEqual(d.judge("stuck", "pressure", 1013.0), Judgement(0.0, False))
        changed = d.judge("stuck", "pressure", 1013.5)
        self.assertTrue(math.isfinite(changed.score) and changed.anomaly, changed)


class StateTest(unittest.TestCase):
    def test_state_round_trips_and_continues_identically(self):
        values = [20.0 + (i * 7 % 5) * 0.1 for i in range(30)]
        whole = detector(window=5, min_history=3)
        expected = [whole.judge("t", "temperature", v) for v in values]
        first = detector(window=5, min_history=3)
        for v in values[:12]:
            first.judge("t", "temperature", v)
        second = detector(window=5, min_history=3)
        second.import_state(first.export_state())
        self.assertEqual([second.judge("t", "temperature", v) for v in values[12:]], expected[12:])

    def test_unknown_version_and_garbage_are_refused_and_keep_the_state(self):
        d = detector(window=3, min_history=2)
        d.judge("t", "humidity", 40.0)
        before = d.export_state()
        for state, reason in [
            (b'{"version": 2, "sensors": {}}', "state version 2 is not 1"),
            (b'{"sensors": {}}', "state has no version"),
            (b"\xff", "state is not JSON"),
            (b'{"version": 1, "sensors": {"t": [1, "x"]}}', "not a list of finite numbers"),
        ]:
            with self.assertRaisesRegex(StateError, reason):
                d.import_state(state)
            self.assertEqual(d.export_state(), before)


class ConfigTest(unittest.TestCase):
    def test_defaults(self):
        self.assertEqual(Config.from_json("{}"), Config(window=20, min_history=10, threshold=4.0, thresholds={}))

    def test_bad_configurations_name_the_key(self):
        for text, message in [
            ("[]", "configuration must be a JSON object"),
            ('{"windw": 3}', "unknown key 'windw'"),
            ('{"window": 1}', "window must be at least 2, got 1"),
            ('{"window": true}', "window must be an integer, got True"),
            ('{"window": 5, "min_history": 6}', "min_history must be between 2 and window (5), got 6"),
            ('{"threshold": 0}', "threshold must be a positive number, got 0"),
            ('{"thresholds": {"co3": 1}}', "thresholds: unknown sensor type 'co3'"),
            ('{"thresholds": {"co2": -1}}', "thresholds.co2 must be a positive number, got -1"),
            ("{", "configuration is not JSON"),
        ]:
            with self.subTest(text=text), self.assertRaises(ConfigError) as caught:
                Config.from_json(text)
            self.assertIn(message, str(caught.exception))


if __name__ == "__main__":
    unittest.main()
