"""Helpers that start real servers (sshd, mosquitto) for integration tests."""
