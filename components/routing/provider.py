"""Old name of `release.routing.provider` (pickles in existing stacks' state)."""

from release.routing.provider import RoutingProvider as RoutingProvider
