"""Schemathesis hooks for Iris's service API (scripts/schemathesis).

One check of our own beside Schemathesis's: no response, to any request
made with tenant A's credentials, may carry anything of tenant B, whose
contacts, circles, identities and events scripts/schemathesis stored
before the run, each named with MARKER. The marker is drawn per run and
comes only from the environment: Hypothesis feeds string literals it finds
in loaded source code into what it generates, so a marker written here
would end up in tenant A's own data and be reported as a leak.
"""
import os

import schemathesis

MARKER = os.environ["IRIS_OTHER_TENANT_MARKER"]


@schemathesis.check
def no_other_tenant_data(ctx, response, case):
    text = response.text or ""
    if MARKER in text:
        raise AssertionError(
            f"a response to tenant A carries tenant B's data ({MARKER!r} in {response.status_code} body)"
        )
