"""The old module names of the deployment's code, kept for one release so nothing deployed breaks.

The code moved by kind (docs/architecture.md): the Pulumi components to `stack/`, the deploy-time
operations to `release/`, the shared names to `contract/`. Two things still name the old
modules and are honoured here, nothing else:

- the state of stacks deployed before the move: the SDK pickles a dynamic provider by its class's
  module and name, and the engine unpickles the OLD provider from the state for `refresh` and
  `delete`, so `components.gate.PromotionGateProvider` (and the others) must still resolve;
- the documented operator commands `python -m components.routing` and
  `python -m components.audit seal`, which forward to `release.routing` and `release.audit`.

Every module here only re-exports (a test keeps it so). Remove the folder once every stack has
run one `pulumi up` after the move (that rewrites the pickles with the new names).
"""
