"""The `cloudtrain` command: options, commands that call `cloudtrain.api`, and rendering.

Nothing here is imported by the library; `entrypoint` answers --help and finished-job status without typer."""
