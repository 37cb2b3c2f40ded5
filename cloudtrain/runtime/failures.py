"""Failures with a known cause, told in one line that names the cause and the fix.

Keras 3's `model.fit` under MultiWorkerMirroredStrategy with more than one worker dies with a ValueError whose
text is a dump of every replica's tensors (keras-team/keras#20585). Whoever writes a job's failure reason
(the runtime's `write_failure`, the launcher, the SageMaker backend reading AWS's reason) passes it through
`explain` first. Stdlib only: it ships in the code tarball.
"""

from __future__ import annotations

import re

_KERAS3_MWMS = re.compile(r"Attempt to convert a value \(PerReplica|PerReplica:\{.*unsupported type", re.S)
KERAS3_MWMS_REASON = (
    "Keras3MultiWorkerError: Keras 3's model.fit cannot run under MultiWorkerMirroredStrategy with more than one "
    "worker (a PerReplica value reached a tensor); set distribution.keras: legacy in the spec (tf-keras with "
    "TF_USE_LEGACY_KERAS=1) or train with cloudtrain.runtime.fit"
)


def explain(text: str) -> str | None:
    """The one-line reason for a failure text of a known kind, or None."""
    if _KERAS3_MWMS.search(text):
        return KERAS3_MWMS_REASON
    return None
