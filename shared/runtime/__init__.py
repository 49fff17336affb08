"""Instance runtimes, and the choice between them by the RUNTIME setting.

Functions call `get_runtime()` and use the `Runtime` protocol only, so the
same code runs model instances as local processes or as Kubernetes pods.
Each runtime module is imported only when chosen, so a function that runs
locally never loads the Kubernetes client.
"""

from __future__ import annotations

from shared.runtime.base import Runtime
from shared.settings import get_settings


class RuntimeNotBuilt(NotImplementedError):
    """The configured runtime has no implementation."""


def get_runtime() -> Runtime:
    """Return the runtime that settings.runtime (RUNTIME) selects.

    RUNTIME=local raises ValueError without LOCAL_RUNTIME_URL. RUNTIME=kubernetes
    returns one runtime per process and raises KubeConfigError when neither an
    in-cluster service account nor a kubeconfig file is found.
    """
    runtime = get_settings().runtime
    if runtime == "local":
        from shared.runtime.local import LocalRuntime

        return LocalRuntime()

    if runtime == "kubernetes":
        from shared.runtime.kubernetes import default_runtime

        return default_runtime()

    raise RuntimeNotBuilt(
        f"RUNTIME={runtime!r} has no runtime: set RUNTIME=local or RUNTIME=kubernetes"
    )
