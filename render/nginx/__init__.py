"""Nginx configuration for the edge proxy: the main config and the routing include."""

from .conf import NginxListen, NginxPaths, render_nginx_conf
from .routing import ROUTING_PATH, render_routing

__all__ = ["NginxListen", "NginxPaths", "ROUTING_PATH", "render_nginx_conf", "render_routing"]
