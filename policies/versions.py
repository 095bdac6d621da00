"""The proxy runs a current nginx: its image names a release at or above the floor.

The floor lives in `contract/versions.py` (one place; plain Python, no Pulumi import), and
`nginx_floor_problem` there decides. Which resources are the proxy's image:

- a container labelled `paper-trading.service=proxy` or `paper-trading.role=proxy`, whatever its
  repository (the proxy's image tag must name the nginx release it ships);
- the `RemoteImage` pulled by the proxy component (its URN's parent chain holds
  `paper-trading:proxy:Proxy`);
- any container or `RemoteImage` whose repository's last segment is exactly `nginx`
  (`nginx`, `docker.io/library/nginx`, `paper-trading-ci/nginx`), so an nginx cannot escape by
  losing its labels.

A tag that names no exact release (`latest`, `alpine`, `1.30-alpine`, a bare digest) is refused:
its version cannot be read, and an unreadable version fails closed.
"""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs

from contract import ROLE_LABEL, SERVICE_LABEL
from contract.versions import image_repository_name, nginx_floor_problem

from .props import CONTAINER, REMOTE_IMAGE, as_str, field, labels, single_label

PROXY = "proxy"
#: The proxy component's type token (stack/proxy.py): its children's URNs carry it.
PROXY_COMPONENT = "paper-trading:proxy:Proxy"


def _parent_types(urn: str) -> list[str]:
    """`urn:pulumi:s::p::a$b$c::name` -> ["a", "b"] (the types above the resource's own)."""
    parts = urn.split("::")
    if len(parts) < 4:
        return []
    return parts[2].split("$")[:-1]


def check_proxy_image_current(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """The proxy's nginx image names an exact release at or above the floor (contract/versions.py)."""
    if args.resource_type == CONTAINER:
        image = as_str(field(args.props, "image"), "image", optional=False)
        found = labels(args.props)
        is_proxy = PROXY in (single_label(found, SERVICE_LABEL), single_label(found, ROLE_LABEL))
    elif args.resource_type == REMOTE_IMAGE:
        image = as_str(field(args.props, "name"), "name", optional=False)
        is_proxy = PROXY_COMPONENT in _parent_types(args.urn)
    else:
        return
    assert image is not None
    if not is_proxy and image_repository_name(image) != "nginx":
        return
    problem = nginx_floor_problem(image)
    if problem:
        report(problem, None)
