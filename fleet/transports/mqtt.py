"""Registers the MQTT transport (implemented in edgeship.fleet.mqtt) under the name "mqtt"."""

from edgeship.fleet.mqtt.transport import MqttTransport
from edgeship.fleet.transports import register

register("mqtt")(MqttTransport)

__all__ = ["MqttTransport"]
