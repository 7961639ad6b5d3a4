"""The reference controller for LF Edge EVE API v2; see docs/controller.md."""
