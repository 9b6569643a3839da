"""The device registry: which push tokens belong to which user (see
:mod:`willowe_tasks.registry.base` for the rules)."""

from willowe_tasks.registry.base import (
    Device,
    DeviceRegistry,
    DeviceValidationError,
    invalid_reason,
    validate_device,
)
from willowe_tasks.registry.sqlite import SQLiteDeviceRegistry

__all__ = ["Device", "DeviceRegistry", "DeviceValidationError", "SQLiteDeviceRegistry",
           "invalid_reason", "validate_device"]
