"""Run the pack's policies over resources exactly as the engine's analyzer does, without the engine.

Each resource goes through pulumi_policy's own analyzer servicer (`Analyze`): its props are
deserialized from the wire form (secret envelopes unwrapped) and wrapped in the SDK's
unknown-checking proxy, options become `PolicyResourceOptions`, per-policy config and
enforcement levels come from a `Configure` call, and an `UnknownValueError` that escapes a
policy becomes the SDK's advisory note. So what passes here passes under `pulumi preview`.

One offline extension: the engine does not hand `retainOnDelete` to policies; here the
options carry it as `retain_on_delete`, which `data-volumes-protected` then checks too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from .rules import ALL_POLICIES, PACK_NAME

_LEVELS = {
    proto.ADVISORY: EnforcementLevel.ADVISORY,
    proto.MANDATORY: EnforcementLevel.MANDATORY,
    proto.DISABLED: EnforcementLevel.DISABLED,
    proto.REMEDIATE: EnforcementLevel.REMEDIATE,
}
_TO_PROTO = {level: number for number, level in _LEVELS.items()}


class Subject(Protocol):
    """What the harness needs of a resource (`tools.render.Resource` fits)."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    wire: dict[str, Any]
    options: dict[str, Any]


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # "mandatory" | "advisory" | "remediate"
    urn: str
    type: str
    name: str
    message: str

    @property
    def mandatory(self) -> bool:
        return self.level in ("mandatory", "remediate")

    def line(self) -> str:
        return f"{self.level.upper():9} {self.policy:32} {self.type}::{self.name}  {self.message}"


class OfflineResourceOptions(PolicyResourceOptions):
    """`PolicyResourceOptions` plus `retain_on_delete`, which only the offline check knows."""

    def __init__(self, base: PolicyResourceOptions, retain_on_delete: bool | None) -> None:
        super().__init__(base.protect, base.ignore_changes, base.delete_before_replace, base.aliases,
                         base.custom_timeouts, base.additional_secret_outputs, base.parent)
        self.retain_on_delete = retain_on_delete


class _OfflineAnalyzer(_PolicyAnalyzerServicer):
    retain: dict[str, bool | None]

    def _get_resource_options(self, request: Any) -> PolicyResourceOptions:
        base = super()._get_resource_options(request)
        return OfflineResourceOptions(base, self.retain.get(request.urn))


def load_pack_config(path: Path | None) -> dict[str, Any]:
    """A `--policy-pack-config` JSON file: `{policy: level | {enforcementLevel?, key: value}}`."""
    if path is None:
        return {}
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: the policy pack config must be a JSON object")
    return document


Resolved = dict[str, tuple[EnforcementLevel, dict[str, Any]]]


def _resolve(policies: Sequence[Policy], pack_config: Mapping[str, Any]) -> Resolved:
    """Each policy's level and properties, the way the CLI resolves them before `Configure`."""
    every = pack_config.get("all")
    resolved: Resolved = {}
    for policy in policies:
        level = policy.enforcement_level or EnforcementLevel.ADVISORY
        if isinstance(every, str):
            level = EnforcementLevel(every)
        entry = pack_config.get(policy.name)
        properties: dict[str, Any] = {}
        if isinstance(entry, str):
            level = EnforcementLevel(entry)
        elif isinstance(entry, Mapping):
            if "enforcementLevel" in entry:
                level = EnforcementLevel(str(entry["enforcementLevel"]))
            properties = {k: v for k, v in entry.items() if k != "enforcementLevel"}
        resolved[policy.name] = (level, properties)
    return resolved


class Analyzer:
    """The pack's analyzer, configured once, run over any number of resources.

    `exact=True` sends every resource through pulumi_policy's analyzer servicer itself
    (protobuf round trip, props re-wrapped per policy, as the engine does). The default
    builds the same `ResourceValidationArgs` (same deserializer, same unknown-checking
    proxy, same options class, same config and level resolution, same handling of an
    escaping `UnknownValueError`) once per resource, which is ~10x faster; a test proves
    both give the same violations.
    """

    def __init__(self, policies: Sequence[Policy] = ALL_POLICIES,
                 pack_config: Mapping[str, Any] | None = None, exact: bool = False) -> None:
        self.policies = list(policies)
        self.exact = exact
        self._resolved = _resolve(self.policies, pack_config or {})
        self._servicer = _OfflineAnalyzer(PACK_NAME, "0.0.1", self.policies, EnforcementLevel.ADVISORY)
        self._servicer.retain = {}
        request = proto.ConfigureAnalyzerRequest()
        for name, (level, properties) in self._resolved.items():
            entry = request.policyConfig[name]
            entry.enforcementLevel = _TO_PROTO[level]
            if properties:
                entry.properties.update(properties)
        self._servicer.Configure(request, None)  # type: ignore[no-untyped-call]
        # What Configure stored, read back the way the servicer hands it to a policy.
        self._config = {
            name: (json_format.MessageToDict(entry.properties) or None)
            for name, entry in request.policyConfig.items()
        }
        self._descriptions = {p.name: p.description for p in self.policies}

    def analyze(self, resource: Subject) -> list[Violation]:
        """Violations for one resource; both the wire and the plain view are checked if they differ."""
        views = [resource.wire]
        if _plain(resource.wire) != resource.inputs:
            views.append(resource.inputs)
        found: dict[tuple[str, str], Violation] = {}
        for props in views:
            analyze = self._analyze_exact if self.exact else self._analyze_fast
            analyzed = analyze(resource, props)
            for violation in analyzed:
                found.setdefault((violation.policy, violation.message), violation)
        return list(found.values())

    def _options(self, resource: Subject) -> proto.AnalyzerResourceOptions:
        options = resource.options
        return proto.AnalyzerResourceOptions(
            protect=bool(options.get("protect")),
            ignoreChanges=list(options.get("ignoreChanges") or []),
            deleteBeforeReplace=bool(options.get("deleteBeforeReplace")),
            deleteBeforeReplaceDefined="deleteBeforeReplace" in options,
            aliases=[str(a) for a in options.get("aliases") or []],
            parent=str(options.get("parent") or ""),
        )

    def _analyze_exact(self, resource: Subject, props: Mapping[str, Any]) -> list[Violation]:
        self._servicer.retain[resource.urn] = resource.options.get("retainOnDelete")
        request = proto.AnalyzeRequest(
            type=resource.type, urn=resource.urn, name=resource.name, options=self._options(resource),
        )
        struct = struct_pb2.Struct()
        json_format.ParseDict(_jsonable(props), struct)
        request.properties.CopyFrom(struct)
        response = self._servicer.Analyze(request, None)  # type: ignore[no-untyped-call]
        return [self._violation(resource, d.policyName, _LEVELS[d.enforcementLevel], d.message)
                for d in response.diagnostics]

    def _analyze_fast(self, resource: Subject, props: Mapping[str, Any]) -> list[Violation]:
        wrapped = unknown_checking_proxy(deserialize_properties(_jsonable(props)))
        opts = OfflineResourceOptions(
            _PolicyAnalyzerServicer._get_resource_options(self._servicer, _Request(self._options(resource))),
            resource.options.get("retainOnDelete"),
        )
        out: list[Violation] = []
        for policy in self.policies:
            level = self._resolved[policy.name][0]
            if level == EnforcementLevel.DISABLED or not isinstance(policy, ResourceValidationPolicy):
                continue
            if level == EnforcementLevel.REMEDIATE:
                level = EnforcementLevel.MANDATORY
            args = ResourceValidationArgs(resource.type, wrapped, resource.urn, resource.name, opts, None,
                                          self._config.get(policy.name), {})
            messages: list[str] = []

            def report(message: str, urn: str | None = None, sink: list[str] = messages) -> None:
                sink.append(message)

            try:
                result = policy.validate(args, report)
                if isawaitable(result):
                    asyncio.new_event_loop().run_until_complete(result)
            except UnknownValueError as exc:  # the SDK's fail-open: an advisory note
                out.append(self._violation(resource, policy.name, EnforcementLevel.ADVISORY,
                                           f"can't run policy '{policy.name}' during preview: {exc.message}"))
                continue
            out.extend(self._violation(resource, policy.name, level, m) for m in messages)
        return out

    def _violation(self, resource: Subject, policy: str, level: EnforcementLevel, message: str) -> Violation:
        return Violation(policy=policy, level=level.value, urn=resource.urn, type=resource.type,
                         name=resource.name, message=self._strip_description(policy, message))

    def analyze_stack(self, resources: Sequence[Subject]) -> list[Violation]:
        """The stack policies over the whole graph, through the servicer's own `AnalyzeStack`.

        Each resource goes over the wire as the engine sends it: props, options, parent,
        dependencies and each input's property dependencies (what `promotion-gated` reads).
        """
        if not any(isinstance(p, StackValidationPolicy) for p in self.policies):
            return []
        request = proto.AnalyzeStackRequest()
        for resource in resources:
            entry = request.resources.add()
            entry.type, entry.urn, entry.name = resource.type, resource.urn, resource.name
            entry.parent = str(resource.options.get("parent") or getattr(resource, "parent", None) or "")
            entry.options.CopyFrom(self._options(resource))
            entry.dependencies.extend(str(d) for d in resource.options.get("dependsOn") or [])
            for key, urns in (resource.options.get("propertyDependencies") or {}).items():
                entry.propertyDependencies[key].urns.extend(str(u) for u in urns)
            struct = struct_pb2.Struct()
            json_format.ParseDict(_jsonable(resource.wire), struct)
            entry.properties.CopyFrom(struct)
        response = self._servicer.AnalyzeStack(request, None)  # type: ignore[no-untyped-call]
        by_urn = {resource.urn: resource for resource in resources}
        stack = next(iter(by_urn), "").split("::")[0].rsplit(":", 1)[-1]
        out = []
        for diagnostic in response.diagnostics:
            subject = by_urn.get(diagnostic.urn)
            out.append(Violation(
                policy=diagnostic.policyName, level=_LEVELS[diagnostic.enforcementLevel].value,
                urn=diagnostic.urn, type=subject.type if subject else "pulumi:pulumi:Stack",
                name=subject.name if subject else stack,
                message=self._strip_description(diagnostic.policyName, diagnostic.message),
            ))
        return out

    def _strip_description(self, policy: str, message: str) -> str:
        description = self._descriptions.get(policy, "")
        if description and message.startswith(description + "\n"):
            return message[len(description) + 1:]
        return message

    def run(self, resources: Iterable[Subject]) -> list[Violation]:
        """Every resource policy on each resource, then the stack policies on the whole graph."""
        every = list(resources)
        violations: list[Violation] = []
        for resource in every:
            violations.extend(self.analyze(resource))
        violations.extend(self.analyze_stack(every))
        return violations


@dataclass(frozen=True)
class _Request:
    """Just enough of an AnalyzeRequest for the servicer's options reader."""

    options: proto.AnalyzerResourceOptions


def _plain(value: Any) -> Any:
    """Wire form to plain values (secret envelopes unwrapped), as `Resource.inputs` holds them."""
    return deserialize_properties(value) if isinstance(value, dict) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def run_policies(resources: Iterable[Subject], pack_config: Mapping[str, Any] | None = None,
                 policies: Sequence[Policy] = ALL_POLICIES, exact: bool = False) -> list[Violation]:
    return Analyzer(policies, pack_config, exact).run(resources)
