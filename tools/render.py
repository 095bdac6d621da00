"""Offline render: evaluate the real program for a stack under the SDK's mock runtime.

Like `helm template`, it writes what `pulumi up` would deploy without an engine:
every resource (type, name, parent, options, inputs) as JSON, and every generated
configuration file (anything uploaded into a container) under a folder.

    python -m tools.render --stack prod --out build/render/prod

Secrets come from stand-ins (`secret:<path>`); in the JSON they are masked.
The same machinery backs the tests and the offline policy check.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import bcrypt
import dill
import pulumi  # noqa: F401 - loaded before the freeze, as the language host does
import pulumi_docker  # noqa: F401
import pulumi_random  # noqa: F401
import pydantic  # noqa: F401
import yaml
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.proto import resource_pb2

from contract import CARRIER_LABEL
from release.plan import READ_STACK_STATE
from settings import ConfigError
from tools.stack_files import stack_config as stack_config  # the render's inputs; part of its face
from tools.stack_files import stack_config_file as stack_config_file
from tools.stack_files import stack_names as stack_names

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "paper-trading"
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
MASK = "[secret]"
#: stack/carrier.py's label: the container whose files a never-started carrier holds.


@dataclass
class Resource:
    """One registered resource as the engine would see it."""

    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    wire: dict[str, Any]
    options: dict[str, Any]

    @property
    def label_map(self) -> dict[str, str]:
        return {entry["label"]: entry["value"] for entry in self.inputs.get("labels") or []}

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn, "type": self.type, "name": self.name, "parent": self.parent,
            "custom": self.custom, "options": self.options, "inputs": _masked(self.wire),
        }


@dataclass
class Graph:
    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    secret_outputs: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def by_name(self, name: str) -> Resource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise KeyError(name)

    @property
    def containers(self) -> list[Resource]:
        return self.of_type("docker:index/container:Container")

    def files(self) -> dict[str, str]:
        """Generated config files by `<container or resource name>/<path>`; secrets masked."""
        found: dict[str, str] = {}
        for resource in self.resources:
            # A carrier's files are its consumer's (stack/carrier.py): filed under the consumer.
            owner = resource.label_map.get(CARRIER_LABEL) if resource.type.endswith("container:Container") \
                else None
            owner = owner or resource.inputs.get("name") or resource.name
            plain, wired = resource.inputs.get("uploads") or [], resource.wire.get("uploads") or []
            uploads = zip(plain, wired, strict=True)
            for upload, wire in uploads:
                content = upload.get("content")
                if content is None:
                    continue
                secret = _is_secret(wire) or _is_secret(wire.get("content"))
                found[f"{owner}{upload['file']}"] = MASK if secret else content
            for path, content in (resource.inputs.get("renderedFiles") or {}).items():
                found[f"{owner}/{path.lstrip('/')}"] = content
        return found


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def _unwrap(value: Any) -> Any:
    """Wire form (secret envelopes) to plain values, as a policy sees them."""
    if _is_secret(value):
        return _unwrap(value.get("value"))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def _masked(value: Any) -> Any:
    if _is_secret(value):
        return MASK
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items() if k != "__provider"}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _computed_state(type_: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Deterministic outputs a provider would compute, so two runs give one graph.

    Everything else a resource outputs is its inputs echoed back, as a provider's create would.
    """
    if type_.startswith("random:index/random"):
        result = f"mock-{name}-{int(inputs.get('length', 32))}"
        if type_ == "random:index/randomPassword:RandomPassword":
            # The provider's bcrypt_hash of the result; a fixed salt keeps the render deterministic,
            # and a real hash lets tests run rendered configs (Alertmanager's web config) as they are.

            hashed = bcrypt.hashpw(result.encode(), b"$2b$10$paper.trading.render.u").decode()
            return {"result": result, "bcryptHash": hashed}
        if type_ == "random:index/randomId:RandomId":
            digest = hashlib.sha256(name.encode()).hexdigest()[:2 * int(inputs.get("byteLength", 8))]
            return {"hex": digest, "dec": str(int(digest, 16))}
        return {"result": result}
    if type_ == "docker:index/remoteImage:RemoteImage":
        image = inputs.get("name")
        return {"imageId": f"sha256:mock-{image}", "repoDigest": f"{image}@sha256:mock"}
    if type_ == "pulumi-python:dynamic:Resource":
        return _dynamic_outputs(inputs.get("__provider"), inputs)
    return {}


def _mock_state(type_: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A created resource's outputs offline: its inputs echoed back plus the computed fields."""
    state = {k: v for k, v in inputs.items() if k != "__provider"}
    return {**state, **_computed_state(type_, name, inputs)}


def _dynamic_outputs(provider: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Offline stand-in for a dynamic provider's create: its `render_outputs` hook if any."""
    if not isinstance(provider, str):
        return {}
    try:


        instance = dill.loads(base64.b64decode(provider))
    except Exception:  # noqa: BLE001 - an undecodable provider just keeps its inputs
        return {}
    hook = getattr(instance, "render_outputs", None)
    return dict(hook(dict(inputs))) if callable(hook) else {}


def evaluate(
    stack: str,
    config: Mapping[str, str] | None = None,
    secret_keys: list[str] | None = None,
    root: Path = ROOT,
    preview: bool = False,
    records: list[Resource] | None = None,
    state: Mapping[str, Any] | None = None,
) -> Graph:
    """Run `__main__.py` for `stack` under mocks and return its resource graph.

    `config`/`secret_keys` replace the stack file's values when given (tests use
    this to feed bad or mutated configs through the real program). `state` is the saved
    state the program reads back (`{urn: {"type", "outputs"}}`, as the engine's
    `readStackResourceOutputs` answers); None: a stack never deployed.
    """
    # The libraries' module objects live as long as the process. Freezing them once they
    # are loaded spares each full collection during the run (which allocates Outputs and
    # futures by the thousand) from traversing all of them again. Undone at the end.

    gc.freeze()
    try:
        return _evaluate(stack, config, secret_keys, root, preview, records, state)
    finally:
        gc.unfreeze()


def _evaluate(
    stack: str,
    config: Mapping[str, str] | None,
    secret_keys: list[str] | None,
    root: Path,
    preview: bool,
    records: list[Resource] | None,
    state: Mapping[str, Any] | None = None,
) -> Graph:

    if config is None:
        config, default_secrets = stack_config(stack, root)
        secret_keys = default_secrets if secret_keys is None else secret_keys
    recorded: list[Resource] = [] if records is None else records

    class Mocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
            return f"{args.name}-id", _mock_state(args.typ, args.name, args.inputs)

        def call(self, args: pmocks.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:

            answer = {"name": args.args.get("stackName"), "outputs": dict(state or {})}
            # No failures: an empty list (the SDK iterates it; None is only accepted from a bare dict).
            return (answer if args.token == READ_STACK_STATE else {}), []

    class RecordingMonitor(pmocks.MockMonitor):
        """The SDK's mock monitor, recording each registration and answering it directly.

        A provider's create echoes its inputs: the response is the request's own wire
        object plus the computed fields, so no nested event loop has to deserialize
        and re-serialize every property (that stand-in work outweighed the program's).
        """

        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC name
            urn = self.make_urn(request.parent, request.type, request.name)
            if request.type == "pulumi:pulumi:Stack":
                return resource_pb2.RegisterResourceResponse(urn=urn)
            wire = json_format.MessageToDict(request.object)
            provider = wire.pop("__provider", None)
            inputs = _unwrap(wire)
            computed = _computed_state(request.type, request.name, {**inputs, "__provider": provider})
            state = struct_pb2.Struct()
            state.CopyFrom(request.object)
            if "__provider" in state.fields:
                del state.fields["__provider"]
            state.update(computed)
            resource_id = f"{request.name}-id"
            self.resources[urn] = pmocks.MockMonitor.ResourceRegistration(
                urn, resource_id, {**inputs, **computed})
            options: dict[str, Any] = {
                "protect": bool(request.protect),
                "retainOnDelete": bool(request.retainOnDelete),
                "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                "dependsOn": sorted(request.dependencies),
                # Which resources each input came from: the engine gives these to stack policies.
                "propertyDependencies": {
                    key: sorted(deps.urns) for key, deps in sorted(request.propertyDependencies.items())
                    if deps.urns
                },
                "ignoreChanges": list(request.ignoreChanges),
                "aliases": sorted(
                    json_format.MessageToDict(a).get("spec", {}).get("name", "")
                    or json_format.MessageToDict(a).get("urn", "")
                    for a in request.aliases
                ),
            }
            recorded.append(Resource(
                urn=urn, type=request.type, name=request.name,
                parent=request.parent or None, custom=bool(request.custom),
                inputs=inputs, wire=wire, options=options,
            ))
            return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id, object=state)

    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # an earlier asyncio.run() in this thread closed and unset its loop
        asyncio.set_event_loop(asyncio.new_event_loop())
    runtime_settings.reset_options(project=PROJECT, stack=stack, preview=preview)
    monitor = RecordingMonitor(Mocks())
    pmocks.set_mocks(Mocks(), project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config), secret_keys or [])

    program = str(root / "__main__.py")
    sys_path_added = str(root) not in sys.path
    if sys_path_added:
        sys.path.insert(0, str(root))

    outputs: dict[str, Any] = {}
    secret_outputs: list[str] = []

    async def collect(exported: Mapping[str, Any]) -> None:
        for name, value in sorted(exported.items()):
            out = pulumi.Output.from_input(value)
            outputs[name] = await out.future()
            if await out.is_secret():
                secret_outputs.append(name)

    def program_run() -> Any:
        runpy.run_path(program, run_name="__main__")
        exported = getattr(runtime_settings.get_root_resource(), "outputs", None) or {}
        return asyncio.ensure_future(collect(exported))

    # The SDK's public runner for programs under mocks (it awaits what the function returns).
    run = cast(Callable[[], None], pulumi.runtime.test(program_run))  # type: ignore[no-untyped-call]
    try:
        run()
    finally:
        if sys_path_added:
            sys.path.remove(str(root))
    recorded.sort(key=lambda r: r.urn)
    return Graph(stack=stack, resources=recorded, outputs=outputs, secret_outputs=secret_outputs)



# --------------------------------------------------------------------------- output


def write(graph: Graph, out: Path) -> list[Path]:
    """Write `resources.json`, `outputs.json` and `files/...`; return what was written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    resources = out / "resources.json"
    resources.write_text(json.dumps([r.to_json() for r in graph.resources], indent=2, sort_keys=True) + "\n")
    written.append(resources)
    outputs = out / "outputs.json"
    shown = {k: (MASK if k in graph.secret_outputs else v) for k, v in graph.outputs.items()}
    outputs.write_text(json.dumps(shown, indent=2, sort_keys=True, default=str) + "\n")
    written.append(outputs)
    for rel, content in sorted(graph.files().items()):
        target = out / "files" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        written.append(target)
    return written


def load_graph(path: Path) -> Graph:
    """A graph written by `write` (its `resources.json`, or the folder holding it).

    Lets a reviewed or hand-mutated render be checked again (e.g. by the offline policy
    check) without re-running the program. Masked secrets stay masked.
    """
    folder = path if path.is_dir() else path.parent
    resources_file = path / "resources.json" if path.is_dir() else path
    entries = json.loads(resources_file.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{resources_file}: expected a list of resources")
    resources = [
        Resource(
            urn=e["urn"], type=e["type"], name=e["name"], parent=e.get("parent"),
            custom=bool(e.get("custom", True)), inputs=_unwrap(e.get("inputs") or {}),
            wire=e.get("inputs") or {}, options=e.get("options") or {},
        )
        for e in entries
    ]
    outputs_file = folder / "outputs.json"
    outputs = json.loads(outputs_file.read_text()) if outputs_file.is_file() else {}
    stack = resources[0].urn.split("::")[0].rsplit(":", 1)[-1] if resources else "unknown"
    return Graph(stack=stack, resources=resources, outputs=outputs)


def iter_summary(graph: Graph) -> Iterator[str]:
    yield f"stack {graph.stack}: {len(graph.resources)} resources, {len(graph.files())} files"
    for name, value in graph.outputs.items():
        shown = MASK if name in graph.secret_outputs else value
        yield f"  output {name} = {shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="prod", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--stack-file", type=Path,
                        help="a stack file anywhere (e.g. a candidate config); the stack name is taken from "
                             "Pulumi.<name>.yaml, else --stack")
    parser.add_argument("--out", type=Path, help="folder to write into (default build/render/<stack>)")
    args = parser.parse_args(argv)

    stack, root = args.stack, ROOT
    try:
        if args.stack_file is not None:
            name = args.stack_file.name
            if name.startswith("Pulumi.") and name.endswith(".yaml"):
                stack = name[len("Pulumi."):-len(".yaml")]
            config, secret_keys = stack_config_file(args.stack_file)
            graph = evaluate(stack, config=config, secret_keys=secret_keys, root=root)
        else:
            graph = evaluate(stack)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except yaml.YAMLError as exc:  # a stack file that is not YAML: name the file and the line
        path = args.stack_file if args.stack_file is not None else root / f"Pulumi.{stack}.yaml"
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        print(f"error: {where}: not valid YAML: {problem}", file=sys.stderr)
        return 1
    out = args.out or ROOT / "build" / "render" / stack
    write(graph, out)
    for line in iter_summary(graph):
        print(line)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
