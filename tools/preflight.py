"""Find every image a stack needs before `pulumi up` creates anything, and get the missing ones.

`pulumi up` pulls a missing image only when it reaches that resource, after the volumes, networks
and earlier containers exist: on a machine without a registry that leaves a half-created stack.
This runs the program offline (tools.render) to list the images the stack would use, and for each
one says where it comes from:

- present: already on the Docker Engine;
- recipe: built on this machine from a recipe in images/ (images/catalog, scripts/build-test-images);
- app: the reference app image, built from reference_app/ (scripts/dev-up builds `:dev`);
- registry: anything else, which only `docker pull` (or `docker load`) can give.

With `--obtain` it builds the recipes and pulls the rest, then checks again; an image still
missing is named with the config key that selects it, and nothing is deployed.

    python -m tools.preflight --stack dev [--obtain] [--pull-timeout 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "images" / "catalog"
APP_REPOSITORY = "paper-trading-reference-app"
#: Recorded on this kind of machine (2 cores, local apt mirror); scripts/dev-up prints them.
RECIPE_BUILD_MINUTES_COLD = 2


@dataclass
class Image:
    ref: str
    #: present | recipe | app | registry
    source: str
    #: Config keys whose value is this ref (`images.nginx`, `deployment.blue.image`, ...).
    keys: list[str] = field(default_factory=list)
    #: The recipe folder (images/<folder>) for `recipe` images.
    recipe: str | None = None
    #: Why it could not be obtained (after --obtain), else None.
    problem: str | None = None


def catalog(path: Path = CATALOG) -> dict[str, str]:
    """tag -> recipe folder, from images/catalog."""
    recipes: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        folder, tag, *_ = line.split()
        recipes[tag] = folder
    return recipes


def _refs_in(resource: Any) -> Iterator[str]:
    inputs = resource.inputs
    if resource.type == "docker:index/remoteImage:RemoteImage":
        name = inputs.get("name")
        if isinstance(name, str):
            yield name
    image = inputs.get("image")
    # A container's `image` is usually a RemoteImage's id (computed, or sha256:...): skip those.
    if isinstance(image, str) and ":" in image and not image.startswith("sha256:"):
        yield image


def needed_images(graph: Any) -> list[str]:
    """Every image reference the evaluated program uses, in first-use order."""
    seen: dict[str, None] = {}
    for resource in graph.resources:
        for ref in _refs_in(resource):
            seen.setdefault(ref, None)
    return list(seen)


def config_keys(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted config key, value) for every string leaf of a settings dump (camelCase keys)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from config_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, str):
        yield prefix, tree


def classify(refs: list[str], keys: Mapping[str, list[str]], recipes: Mapping[str, str],
             present: Any) -> list[Image]:
    images = []
    for ref in refs:
        if present(ref):
            source = "present"
        elif ref in recipes:
            source = "recipe"
        elif ref.split(":", 1)[0] == APP_REPOSITORY:
            source = "app"
        else:
            source = "registry"
        images.append(Image(ref=ref, source=source, keys=sorted(keys.get(ref, [])), recipe=recipes.get(ref)))
    return images


def _say(text: str) -> None:
    print(f"preflight: {text}", file=sys.stderr, flush=True)


def _build_recipes(missing: list[Image]) -> str | None:
    """Run scripts/build-test-images --ci (cached by recipe hash); the failure's tail, or None."""
    if os.geteuid() != 0:
        probe = subprocess.run(["docker", "image", "inspect", "paper-trading-base:test"], capture_output=True)
        if probe.returncode != 0:
            return ("the Debian base image paper-trading-base:test is not here and building it needs root "
                    "(debootstrap): run `sudo scripts/build-test-images --ci` once, then run again")
    names = ", ".join(image.recipe or image.ref for image in missing)
    _say(f"building {len(missing)} image(s) from images/ ({names}) with scripts/build-test-images --ci: "
         f"about {RECIPE_BUILD_MINUTES_COLD} minutes on a fresh machine (Debian packages from the apt "
         "mirror), seconds once built")
    started = time.monotonic()
    script = str(ROOT / "scripts" / "build-test-images")
    proc = subprocess.run([script, "--ci"], capture_output=True, text=True)
    if proc.returncode != 0:
        return "scripts/build-test-images --ci failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-15:])
    _say(f"images built in {time.monotonic() - started:.0f} s")
    return None


def _pull(ref: str, timeout: float) -> str | None:
    _say(f"pulling {ref} (up to {timeout:g} s for a registry to answer)")
    try:
        proc = subprocess.run(["docker", "pull", "--quiet", ref], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no registry answered within {timeout:g} s"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"docker pull failed: {lines[-1] if lines else 'exit ' + str(proc.returncode)}"
    return None


def how_to_get(image: Image) -> str:
    keys = " / ".join(image.keys) or "(no config key: a built-in default)"
    if image.source == "app":
        return (f"{keys} = {image.ref}: build it from reference_app/ (scripts/dev-up does) or point "
                "the key at an image you have")
    if image.source == "recipe":
        return f"{keys} = {image.ref}: built from images/{image.recipe} by scripts/build-test-images --ci"
    return (f"{keys} = {image.ref}: only a registry or `docker load` can give it; load it, point "
            f"{image.keys[0] if image.keys else 'the key'} at an image you have, or turn the service off")


def run(stack: str, obtain: bool, pull_timeout: float) -> tuple[list[Image], list[Image]]:
    """The stack's images and those still missing (after obtaining them when asked)."""
    import docker  # the docker SDK: images are looked up on the engine the stack deploys to

    from settings import PROJECT, parse_settings
    from tools.render import evaluate, stack_config

    config, secret_keys = stack_config(stack)
    prefix = f"{PROJECT}:"
    raw = {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}
    settings = parse_settings(raw, frozenset(k[len(prefix):] for k in secret_keys if k.startswith(prefix)))
    keys: dict[str, list[str]] = {}
    for key, value in config_keys(settings.model_dump(mode="json", by_alias=True)):
        keys.setdefault(value, []).append(key)
    refs = needed_images(evaluate(stack))
    client = docker.from_env()

    def present(ref: str) -> bool:
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    images = classify(refs, keys, catalog(), present)
    if obtain:
        recipes = [i for i in images if i.source == "recipe"]
        problem = _build_recipes(recipes) if recipes else None
        for image in recipes:
            image.problem = problem if problem or not present(image.ref) else None
        for image in images:
            if image.source == "registry":
                image.problem = _pull(image.ref, pull_timeout)
        for image in images:
            if image.source == "app" and not present(image.ref):
                image.problem = "not built"
    missing = [i for i in images if i.source != "present" and (not obtain or i.problem or not present(i.ref))]
    return images, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--obtain", action="store_true", help="build the recipe images and pull the others")
    parser.add_argument("--pull-timeout", type=float, default=60.0, help="seconds to wait for each pull")
    parser.add_argument("--json", action="store_true", help="print every image as JSON on stdout")
    args = parser.parse_args(argv)
    from settings import ConfigError

    try:
        images, missing = run(args.stack, args.obtain, args.pull_timeout)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the Docker Engine or the SDK: one line, no traceback
        print(f"error: cannot look up the stack's images on the Docker Engine: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(i) for i in images], indent=2))
    if missing:
        could_not = " and could not be obtained" if args.obtain else ""
        print(f"error: {len(missing)} image(s) the {args.stack} stack needs are not on this machine"
              f"{could_not}; nothing was deployed:", file=sys.stderr)
        for image in missing:
            why = f" ({image.problem})" if image.problem else ""
            print(f"  - {how_to_get(image)}{why}", file=sys.stderr)
        return 1
    _say(f"all {len(images)} images of the {args.stack} stack are on this machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
