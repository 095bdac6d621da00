"""Old name of `release.gate` (pickles in existing stacks' state)."""

from release.gate import PromotionGateProvider as PromotionGateProvider
