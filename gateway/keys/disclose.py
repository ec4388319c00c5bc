"""Answering a leak report: each token checked offline, then looked up, then the deployment's
action applied (`leak_action`: revoke | disable | notify).

Shared by the secret-scanning endpoint (api/secret_scanning.py) and `gateway keys disclose`.
A token of another prefix or with a bad checksum is a false positive with no lookup; one that
passes but matches no key (never ours, or already revoked) is a false positive too; a key of
this deployment is a true positive and gets the action, audited.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.keys.leaks import Finding, Label, could_be_ours
from gateway.services import Services

log = logging.getLogger("gateway.keys")


async def respond(
    services: Services, findings: Sequence[Finding], *, actor: str, source: str
) -> list[tuple[Finding, Label, str | None]]:
    """For each finding: its label and the key id it named (None for a false positive)."""
    settings = services.settings
    out: list[tuple[Finding, Label, str | None]] = []
    for finding in findings:
        if not could_be_ours(finding.token, settings.key_prefix, settings.accepted_key_prefixes):
            out.append((finding, "false_positive", None))
            continue
        found = await services.store.find_key_by_hash(services.hasher.digest(finding.token))
        if found is None:
            out.append((finding, "false_positive", None))
            continue
        key = found.key
        await services.keys.mark_leaked(
            key,
            action=settings.leak_action,
            source=f"{source}: {finding.source}" if finding.source else source,
            url=finding.url,
            actor=actor,
        )
        log.warning("key %s reported leaked (%s); action: %s", key.id, source, settings.leak_action)
        out.append((finding, "true_positive", key.id))
    return out
