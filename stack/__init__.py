"""The Pulumi components of the single-host Docker target: one ComponentResource per module.

Networks, volumes, datastores, backup, the two app colors, the proxy, monitoring, IDS and the
host firewall. Their configuration files come from `render/`, the programs they run from
`programs/`, the deploy-time operations they are wired to from `release/`.
"""
