"""The release on Docker Swarm: the gate's rollout checks and the switch on every edge node's proxy.

The protocol is the single host's (release/routing): the markers, the lock, the confirmation
through the public listener, the switch back; here it runs once per edge node, all or nothing.
"""
