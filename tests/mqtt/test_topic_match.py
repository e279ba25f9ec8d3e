"""Handler routing matches topics exactly as paho's topic_matches_sub does (MQTT 3.1.1/5 rules:
`+` one level, `#` the rest including the parent, no wildcard match of `$` topics in the first level)."""

from __future__ import annotations

import itertools

import paho.mqtt.client as paho

from edgeship.fleet.mqtt.client import topic_matches

PATTERNS = ["#", "+", "+/+", "a", "a/b", "a/+", "a/#", "a/+/c", "a/+/#", "+/b/#", "+/+/+", "$SYS/#", "$SYS/+/x",
            "edgeship/devices/+/reported", "edgeship/chunks/#", "a//c", "a/+/", "/#", "/+", "a/b/c/d"]
TOPICS = ["a", "a/b", "a/b/c", "a/b/c/d", "a/", "a//c", "/", "/a", "b", "b/b/x", "$SYS", "$SYS/x", "$SYS/broker/x",
          "edgeship/devices/dev-1/reported", "edgeship/devices/dev-1/status", "edgeship/chunks/ab12",
          "edgeship/devices//reported", "", "a/b/", "x/b"]


def test_matches_exactly_like_paho():
    for pattern, topic in itertools.product(PATTERNS, TOPICS):
        assert topic_matches(pattern, topic) == paho.topic_matches_sub(pattern, topic), (pattern, topic)
