"""The job spec: its pydantic models, the YAML source with line numbers, `--set` overrides and error messages."""
