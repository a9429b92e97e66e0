"""MQTT: one asyncio client over paho-mqtt, and a local broker for tests and the demo."""

from evdlm.mqtt.client import MqttClient, MqttError, MqttMessage, MqttNotConnectedError, MqttWill

__all__ = ["MqttClient", "MqttError", "MqttMessage", "MqttNotConnectedError", "MqttWill"]
