"""tools/preflight.py and tools/devinfo.py: what scripts/dev-up decides before and after `pulumi up`."""

from __future__ import annotations

import io
from pathlib import Path

from tests.support import render_with, rendered
from tools.devinfo import fold_tracebacks, notices, stack_settings, summary
from tools.preflight import Image, catalog, classify, config_keys, how_to_get, needed_images

ROOT = Path(__file__).resolve().parents[2]


def test_the_catalog_lists_every_recipe_folder_once() -> None:
    recipes = catalog()
    folders = sorted(p.name for p in (ROOT / "images").iterdir() if (p / "Dockerfile").is_file())
    assert sorted(recipes.values()) == folders
    assert all(":" in tag and not tag.endswith(":latest") for tag in recipes)


def test_the_dev_stack_needs_only_images_built_here() -> None:
    """Offline from nothing: every image of the dev stack is a recipe or the reference app."""
    refs = needed_images(rendered("dev"))
    recipes = catalog()
    assert "paper-trading-reference-app:dev" in refs
    assert sorted(r for r in refs if r not in recipes) == ["paper-trading-reference-app:dev"]
    # The services that are on, each with its image; none of the registry-only ones.
    assert {"paper-trading-ci/nginx:1.30.6", "paper-trading-ci/postgres:15", "paper-trading-ci/ids:1.0.2",
            "paper-trading-ci/blackbox-exporter:0.23"} <= set(refs)


def test_an_enabled_service_brings_its_image_into_the_list() -> None:
    graph = render_with("dev", monitoring={**stack_settings("dev").monitoring.model_dump(
        mode="json", by_alias=True), "grafana": {"enabled": True, "port": 13001}})
    assert "grafana/grafana:11.3.1" in needed_images(graph)
    assert "grafana/grafana:11.3.1" not in needed_images(rendered("dev"))


def test_each_image_is_classified_with_the_keys_that_select_it() -> None:
    keys = {"paper-trading-ci/redis:7.0": ["images.redis"], "grafana/grafana:11.3.1": ["images.grafana"],
            "paper-trading-reference-app:dev": ["deployment.blue.image", "deployment.green.image"]}
    here = {"paper-trading-ci/postgres:15"}
    images = classify(
        ["paper-trading-ci/postgres:15", "paper-trading-ci/redis:7.0", "grafana/grafana:11.3.1",
         "paper-trading-reference-app:dev"],
        keys, catalog(), present=lambda ref: ref in here)
    assert [(i.ref, i.source, i.recipe) for i in images] == [
        ("paper-trading-ci/postgres:15", "present", "postgres"),
        ("paper-trading-ci/redis:7.0", "recipe", "redis"),
        ("grafana/grafana:11.3.1", "registry", None),
        ("paper-trading-reference-app:dev", "app", None),
    ]
    assert images[2].keys == ["images.grafana"]
    assert "images.grafana = grafana/grafana:11.3.1" in how_to_get(images[2])
    assert "images/redis" in how_to_get(images[1])


def test_config_keys_are_dotted_camel_case_paths() -> None:
    dump = stack_settings("dev").model_dump(mode="json", by_alias=True)
    found = dict(config_keys(dump))
    assert found["images.nodeExporter"] == "paper-trading-ci/node-exporter:1.5"
    assert found["deployment.blue.image"] == "paper-trading-reference-app:dev"
    assert found["monitoring.blackboxImage"] == "paper-trading-ci/blackbox-exporter:0.23"


def test_a_traceback_is_folded_to_its_exception_line_and_kept() -> None:
    stream = [
        "Updating (dev):\n",
        "    error: Program failed with an unhandled exception:\n",
        "    Traceback (most recent call last):\n",
        '      File "/x/__main__.py", line 3, in <module>\n',
        "        run()\n",
        "    KeyboardInterrupt\n",
        "Resources:\n",
    ]
    keep = io.StringIO()
    out = list(fold_tracebacks(stream, keep))
    assert out[0] == stream[0] and out[1] == stream[1] and out[-1] == "Resources:\n"
    assert len(out) == 4
    assert "KeyboardInterrupt" in out[2] and "Traceback" not in out[2]
    assert keep.getvalue() == "".join(stream[2:6])


def test_chained_tracebacks_fold_into_one_line() -> None:
    stream = [
        "Traceback (most recent call last):\n", '  File "a", line 1\n', "ValueError: x\n", "\n",
        "During handling of the above exception, another exception occurred:\n", "\n",
        "Traceback (most recent call last):\n", '  File "b", line 2\n', "RuntimeError: y\n", "after\n",
    ]
    out = list(fold_tracebacks(stream))
    assert not any("File " in line for line in out)
    assert out[-1] == "after\n"


def test_notices_name_the_parts_off_and_the_host_firewall() -> None:
    settings = stack_settings("dev")
    lines = notices(settings)
    assert any(line.startswith("runs without Grafana") for line in lines)
    assert any("host firewall is off" in line for line in lines)
    on = settings.model_copy(update={"security": settings.security.model_copy(update={
        "firewall": settings.security.firewall.model_copy(update={"enabled": True})})})
    (firewall,) = [line for line in notices(on) if "firewall" in line]
    assert "ON" in firewall and "inet paper_trading_guard_paper_trading_dev" in firewall


def test_the_summary_lists_where_to_look_and_what_to_try() -> None:
    outputs = {"activeColor": "blue", "previewColor": "green", "appUrl": "http://127.0.0.1:8080",
               "previewUrl": "http://127.0.0.1:8081", "prometheusUrl": "http://127.0.0.1:19090",
               "alertmanagerUrl": "http://127.0.0.1:19093", "grafanaUrl": None}
    lines = summary(outputs, "dev", "paper-trading-dev", 200, "blue", 90)
    assert lines[0].startswith("the dev stack is up in 90 s: blue is live")
    labels = [line.split()[0] for line in lines[1:] if line.startswith("  ")]
    assert labels[:5] == ["app", "preview", "prometheus", "alertmanager", "outputs"]
    assert {"release", "flip", "rollback", "backup", "emergency"} <= set(labels)
    (release,) = [line for line in lines if line.split()[:1] == ["release"]]
    assert "deployment.green.image" in release


def test_an_image_problem_is_reported_for_the_registry_only_image() -> None:
    image = Image(ref="registry.invalid/x:1", source="registry", keys=["images.redis"])
    assert how_to_get(image).startswith("images.redis = registry.invalid/x:1: only a registry")


def test_a_service_that_is_off_exports_no_url() -> None:
    outputs = rendered("dev").outputs
    assert outputs["grafanaUrl"] is None
    assert outputs["prometheusUrl"] == "http://127.0.0.1:19090"
