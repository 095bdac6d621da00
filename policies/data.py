"""Data safety: data volumes survive `pulumi destroy`/replacement; the backend network is internal."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs

from . import settings
from .props import NETWORK, VOLUME, as_bool, as_str, field, labels

DATA_LABEL = "paper-trading.data"


def check_data_volumes_protected(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Every data volume is protected (and retained on delete where the host exposes that option)."""
    if args.resource_type != VOLUME:
        return
    # Fail closed: a volume is data unless it says it is disposable, by label or by a configured
    # name suffix, and a `*-data` name or `paper-trading.data=true` always means data.
    suffixes = [str(s) for s in settings.config(args, "data-volumes-protected")["disposableVolumeSuffixes"]]
    name = as_str(field(args.props, "name"), "name") or args.name
    data = labels(args.props).get(DATA_LABEL) or []
    disposable = data == ["false"] or (not data and any(name.endswith(s) for s in suffixes))
    if disposable and not name.endswith("-data"):
        return
    if args.opts.protect is not True:
        report("data volume must be created with protect=True (ResourceOptions)", None)
    # The engine does not pass retainOnDelete to policies; the offline check does.
    retain = getattr(args.opts, "retain_on_delete", None)
    if retain is False:
        report("data volume must be created with retain_on_delete=True (ResourceOptions)", None)


def check_backend_network_internal(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """The backend network (datastores) has no route off the host: `internal: true`."""
    if args.resource_type != NETWORK:
        return
    suffixes = [str(s) for s in settings.config(args, "backend-network-internal")["internalNetworkSuffixes"]]
    name = as_str(field(args.props, "name"), "name") or args.name
    if not (args.name == "backend" or any(name.endswith(s) for s in suffixes)):
        return
    if as_bool(field(args.props, "internal"), "internal") is not True:
        report(f"network {name!r} must be internal (internal=True)", None)
