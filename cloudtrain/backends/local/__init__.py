"""The local backend: SageMaker's container contract on this machine (`backend.LocalBackend`), its detached
runner (`runner`, `container_runner` with `containers` for `--container`) and the scope that ends a job's
processes (`scope`). Nothing is imported here: `python -m cloudtrain.backends.local.runner` starts light."""
