"""One base for the program's dynamic providers (gate, switch, records, guard, firewall table).

Each of them keeps its inputs (plus what it did) in the stack's state and acts at create and
update only; what differs is which inputs are a change, which ones replace it, what it does, and
what its id is. The SDK's plumbing (results, the no-op delete, the offline render's stand-in
outputs) lives here once.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pulumi import dynamic as dyn


class StateProvider(dyn.ResourceProvider):
    """A dynamic provider whose state is its inputs and what `apply` adds to them."""

    # The pickled provider holds no secrets (it is a reference to its class), so it need not be a
    # secret; a plain string also lets the offline render (tools/render.py) call `render_outputs`.
    serialize_as_secret_always = False
    #: Inputs whose change is a change of the resource (the engine then calls update).
    WATCHED: ClassVar[tuple[str, ...]] = ()
    #: Of those, the ones whose change replaces it (create the new one, delete the old one).
    REPLACES: ClassVar[tuple[str, ...]] = ()
    #: The input that names the resource in its id (`<prefix>-<value>`).
    ID_KEY: ClassVar[str] = ""
    ID_PREFIX: ClassVar[str] = ""

    def resource_id(self, props: dict[str, Any]) -> str:
        return f"{self.ID_PREFIX or type(self).__name__}-{props.get(self.ID_KEY)}"

    def apply(self, props: dict[str, Any], olds: dict[str, Any] | None) -> dict[str, Any]:
        """What create (olds None) and update do; returns the state. Default: keep the inputs."""
        return props

    def changed(self, olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
        return [key for key in self.WATCHED if olds.get(key) != news.get(key)]

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        return dyn.CreateResult(id_=self.resource_id(props), outs=self.apply(props, None))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = self.changed(olds, news)
        replaces = [key for key in self.REPLACES if key in changed]
        return dyn.DiffResult(changes=bool(changed), replaces=replaces, stables=[],
                              delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        return dyn.UpdateResult(outs=self.apply(news, olds))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing by default: the record of a gate, switch or release outlives the resource."""

    def render_outputs(self, _inputs: dict[str, Any]) -> dict[str, Any]:
        """The offline render's stand-in for what `apply` adds (tools/render.py): nothing."""
        return {}
