"""What DVC's output says: did ``dvc repro --single-item STAGE`` run the stage or skip
it, and does a failed command look transient (worth a retry) or deterministic.

DVC, not the flows, decides what reruns; these functions only read its decision from
the text it printed (DVC 3's wording).
"""

from __future__ import annotations

import re
from typing import Literal

ReproDecision = Literal["ran", "skipped"]

# What `dvc repro --single-item STAGE` prints (DVC 3) when it decides about the stage.
_RAN = "Running stage '{}'"
_SKIPS = {"Stage '{}' didn't change, skipping": "up to date",
          "Stage '{}' is cached - skipping run, checking out outputs": "restored from the run cache"}


def repro_outcome(stage: str, output: str) -> tuple[ReproDecision, str]:
    """``("ran" | "skipped", detail)`` from the output of a successful ``dvc repro
    --single-item STAGE``. DVC, not the flow, decides what reruns; this only reads its
    decision. Output that names neither (a DVC whose wording changed) counts as ran:
    claiming work was skipped when it was not would hide a rerun."""
    for pattern, detail in _SKIPS.items():
        if pattern.format(stage) in output:
            return "skipped", detail
    if _RAN.format(stage) in output:
        return "ran", ""
    return "ran", "DVC did not say whether it ran the stage"


# A failure is retried only when its output says the cause lies outside the stage and may
# go away by itself: another process holds a lock, a server was briefly unreachable. Any
# other failure (a bug, bad data, out of memory, a killed process) repeats with the same
# inputs, so a retry would only waste the stage's run time: it fails the flow at once.
TRANSIENT_PATTERNS: dict[str, str] = {
    r"Unable to acquire lock": "DVC's repository lock is held by another dvc process",
    r"database is locked": "a SQLite database (MLflow's or Prefect's) is busy",
    r"Connection (refused|reset|aborted)|ConnectionError|Max retries exceeded with url"
    r"|Remote end closed connection|Temporary failure in name resolution":
        "a server (MLflow, a DVC remote) did not answer",
    r"\b(502 Bad Gateway|503 Service Unavailable|504 Gateway Time-?out)\b": "a server answered busy",
    r"Read timed out|ConnectTimeout|ReadTimeout": "a server timed out",
}
TRANSIENT_TAIL_LINES = 100  # the error is at the end; an old recovered warning is not the cause


def transient_cause(output: str) -> str | None:
    """Why a failed command's output looks transient (None: a deterministic failure)."""
    tail = "\n".join(output.splitlines()[-TRANSIENT_TAIL_LINES:])
    for pattern, cause in TRANSIENT_PATTERNS.items():
        if re.search(pattern, tail, flags=re.IGNORECASE):
            return cause
    return None
