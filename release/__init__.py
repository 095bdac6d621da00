"""The deploy-time operations: what happens to a release between `pulumi up` and live traffic.

The release plan (`plan`: which color is live, what each runs), the promotion gate (`gate`), the
switch (`routing/`), the handoff of the background work (`handoff`), the audit trail (`audit`,
`audit_seal`), the release guard and records (`guard`, `record`), all dynamic resources on one
base (`dynamic`). The Pulumi components that build the containers are in `stack/`.
"""
