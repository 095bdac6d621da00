"""Old name of `release.routing` (pickles naming `components.routing.RoutingProvider`)."""

from release.routing.provider import RoutingProvider as RoutingProvider
