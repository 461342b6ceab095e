"""The runner: runs one runbook command's script and emits one compact result JSON (see README.md)."""
