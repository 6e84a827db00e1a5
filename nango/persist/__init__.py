"""Persist: record batches (save/update/delete with change and deletion tracking), checkpoints,
function log lines and runner locks."""
