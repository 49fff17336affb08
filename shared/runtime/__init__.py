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
    """The configured runtime has no implementation yet."""


def get_runtime() -> Runtime:
    """Return the runtime that settings.runtime (RUNTIME) selects.

    Raises RuntimeNotBuilt for RUNTIME=kubernetes, which is not built yet,
    and ValueError when RUNTIME=local has no LOCAL_RUNTIME_URL.
    """
    runtime = get_settings().runtime
    if runtime == "local":
        from shared.runtime.local import LocalRuntime

        return LocalRuntime()

    raise RuntimeNotBuilt(
        f"RUNTIME={runtime!r} is not built yet: only the local runtime exists. "
        "Set RUNTIME=local and LOCAL_RUNTIME_URL to a local pod server (the "
        "local stack sets both)"
    )
