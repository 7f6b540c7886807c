"""``healthpipe sandbox``: a simulated country served over the real source APIs on localhost
(DHIS2 Web API, FHIR R4 REST and Bulk Data, ODK Central OData, KoboToolbox v2), with optional
fault injection, plus an MLLP sender that replays the HL7 v2 files to a receiver.

    with start_sandbox(data_dir) as sandbox:
        requests.get(f"{sandbox.dhis2_url}/api/organisationUnits", auth=("admin", "district"))
"""

from pipelines.sandbox.auth import Credentials
from pipelines.sandbox.faults import FaultConfig, FaultSpecError
from pipelines.sandbox.fhir_api import FhirSettings
from pipelines.sandbox.kobo_api import KoboSettings
from pipelines.sandbox.mllp import MllpSendError, SendReport, send_hl7_files
from pipelines.sandbox.odk_api import OdkSettings
from pipelines.sandbox.server import (
    Sandbox,
    SandboxSettings,
    run_sandbox_cli,
    serve_forever,
    start_sandbox,
)

__all__ = [
    "Credentials",
    "FaultConfig",
    "FaultSpecError",
    "FhirSettings",
    "KoboSettings",
    "MllpSendError",
    "OdkSettings",
    "Sandbox",
    "SandboxSettings",
    "SendReport",
    "run_sandbox_cli",
    "send_hl7_files",
    "serve_forever",
    "start_sandbox",
]
