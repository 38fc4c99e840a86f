"""Text as dataset records hold it: TFDS text features come back as UTF-8 bytes, text read into
memory as str. Every reader of a text field goes through `as_str`."""

from __future__ import annotations


def as_str(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
