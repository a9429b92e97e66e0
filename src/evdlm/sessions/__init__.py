"""Session inputs from operators: commands over MQTT and HTTP (see docs/sessions.md)."""
