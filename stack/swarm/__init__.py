"""The Docker Swarm target's Pulumi components: overlay networks, the colors and the proxy as services.

Beside the single-host components in `stack/`, built from the same settings and renders;
`release/swarm/` holds the deploy-time operations that reach the nodes (docs/swarm.md).
"""
