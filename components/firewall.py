"""Old name of `stack.firewall` (pickles in existing stacks' state)."""

from stack.firewall import FirewallTableProvider as FirewallTableProvider
