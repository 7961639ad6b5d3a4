# SPDX-License-Identifier: Apache-2.0
"""agent.reconcile.configitems and agent.reconcile.node: runtime config items and apply()."""

from __future__ import annotations

import pytest

from agent.model.config import NodeConfig, ObjectError, from_proto
from agent.model.configitems import ConfigItems, parse_items
from agent.reconcile import configitems
from agent.reconcile.configitems import ConfigItemConfigurator, ConfigItemValue, RuntimeItems
from agent.reconcile.node import ApplyReport, NodeReconciler
from agent.wire.pb.config import devcommon_pb2, devconfig_pb2

DEVICE = "11111111-1111-4111-8111-111111111111"


def node_config(*pairs: tuple[str, str], version: str = "1", errors: int = 0) -> NodeConfig:
    return NodeConfig(
        device_uuid=DEVICE,
        version=version,
        timestamp=0.0,
        items=parse_items(pairs),
        errors=tuple(ObjectError("app", f"id{i}", "bad", "broken") for i in range(errors)),
    )


class Listener:
    def __init__(self) -> None:
        self.calls: list[set[str]] = []

    def __call__(self, changed: set[str]) -> None:
        self.calls.append(set(changed))


@pytest.fixture
def runtime() -> RuntimeItems:
    return RuntimeItems()


@pytest.fixture
def listener(runtime: RuntimeItems) -> Listener:
    lst = Listener()
    runtime.subscribe(lst)
    return lst


# ---------------------------------------------------------------- configitems pieces


def test_render() -> None:
    items = parse_items([("timer.config.interval", "30"), ("maintenance.mode", "true")])
    rendered = configitems.render(items)
    assert rendered == {
        ("configitem", "timer.config.interval"): ConfigItemValue("timer.config.interval", 30),
        ("configitem", "maintenance.mode"): ConfigItemValue("maintenance.mode", True),
    }
    value = rendered[("configitem", "maintenance.mode")]
    assert list(value.deps()) == []
    assert value.needs_recreate(ConfigItemValue("maintenance.mode", False)) is False


def test_render_skips_unknown_and_invalid() -> None:
    items = parse_items([("agent.x.debug.loglevel", "debug"), ("timer.config.interval", "1")])
    assert configitems.render(items) == {}


def test_runtime_items_defaults(runtime: RuntimeItems) -> None:
    assert runtime.current.int("timer.config.interval") == 60
    initial = parse_items([("timer.config.interval", "30")])
    assert RuntimeItems(initial).current is initial


def test_set_values_notifies_changed_keys(runtime: RuntimeItems, listener: Listener) -> None:
    runtime.set_values({"timer.config.interval": 30, "maintenance.mode": True}, {})
    assert listener.calls == [{"timer.config.interval", "maintenance.mode"}]
    runtime.set_values({"timer.config.interval": 30, "maintenance.mode": True}, {})
    assert len(listener.calls) == 1  # nothing changed, nobody called
    runtime.set_values({"timer.config.interval": 45}, {})
    assert listener.calls[-1] == {"timer.config.interval", "maintenance.mode"}
    assert runtime.current.bool("maintenance.mode") is False


async def test_configurator_stages_until_commit(runtime: RuntimeItems, listener: Listener) -> None:
    cfg = ConfigItemConfigurator(runtime)
    await cfg.create(ConfigItemValue("timer.config.interval", 30))
    await cfg.create(ConfigItemValue("timer.metric.interval", 20))
    assert runtime.current.int("timer.config.interval") == 60
    assert listener.calls == []
    cfg.commit(ConfigItems())
    assert listener.calls == [{"timer.config.interval", "timer.metric.interval"}]
    await cfg.modify(
        ConfigItemValue("timer.config.interval", 30), ConfigItemValue("timer.config.interval", 90)
    )
    await cfg.delete(ConfigItemValue("timer.metric.interval", 20))
    await cfg.delete(ConfigItemValue("timer.metric.interval", 20))  # already gone: fine
    cfg.commit(ConfigItems(unknown={"agent.a.b": "c"}))
    assert dict(runtime.current.values) == {"timer.config.interval": 90}
    assert dict(runtime.current.unknown) == {"agent.a.b": "c"}
    assert listener.calls[-1] == {"timer.config.interval", "timer.metric.interval"}


# ---------------------------------------------------------------- NodeReconciler


async def test_apply_sets_runtime_items(runtime: RuntimeItems, listener: Listener) -> None:
    node = NodeReconciler(runtime)
    ok = await node.apply(
        node_config(("timer.config.interval", "30"), ("debug.default.loglevel", "debug"))
    )
    assert ok is True
    assert runtime.current.int("timer.config.interval") == 30
    assert runtime.current.get("debug.default.loglevel") == "debug"
    assert listener.calls == [{"timer.config.interval", "debug.default.loglevel"}]
    assert node.report == ApplyReport(version="1")
    assert node.report.ok
    assert node.current is not None and node.current.version == "1"


async def test_reapply_same_config_changes_nothing(
    runtime: RuntimeItems, listener: Listener
) -> None:
    node = NodeReconciler(runtime)
    config = node_config(("timer.config.interval", "30"))
    assert await node.apply(config)
    assert await node.apply(node_config(("timer.config.interval", "30"), version="2"))
    assert listener.calls == [{"timer.config.interval"}]
    assert node.report.version == "2"


async def test_changed_value_notifies_only_that_key(
    runtime: RuntimeItems, listener: Listener
) -> None:
    node = NodeReconciler(runtime)
    await node.apply(node_config(("timer.config.interval", "30"), ("timer.metric.interval", "30")))
    await node.apply(node_config(("timer.config.interval", "90"), ("timer.metric.interval", "30")))
    assert listener.calls[-1] == {"timer.config.interval"}
    assert runtime.current.int("timer.config.interval") == 90
    assert runtime.current.int("timer.metric.interval") == 30


async def test_removing_item_restores_default(runtime: RuntimeItems, listener: Listener) -> None:
    node = NodeReconciler(runtime)
    await node.apply(node_config(("timer.config.interval", "30"), ("maintenance.mode", "true")))
    assert runtime.current.bool("maintenance.mode") is True
    assert await node.apply(node_config(("maintenance.mode", "true")))
    assert listener.calls[-1] == {"timer.config.interval"}
    assert "timer.config.interval" not in runtime.current.values
    assert runtime.current.int("timer.config.interval") == 60
    assert await node.apply(node_config())
    assert runtime.current.bool("maintenance.mode") is False
    assert dict(runtime.current.values) == {}


async def test_invalid_item_value_keeps_default(runtime: RuntimeItems) -> None:
    node = NodeReconciler(runtime)
    await node.apply(node_config(("timer.config.interval", "30")))
    msg = devconfig_pb2.EdgeDevConfig(
        id=devcommon_pb2.UUIDandVersion(uuid=DEVICE, version="2"),
        configItems=[devcommon_pb2.ConfigItem(key="timer.config.interval", value="1")],
    )
    ok = await node.apply(from_proto(msg))
    assert ok is False
    assert runtime.current.int("timer.config.interval") == 60
    (err,) = node.report.object_errors
    assert (err.kind, err.id) == ("configitem", "timer.config.interval")


async def test_unknown_items_published(runtime: RuntimeItems) -> None:
    node = NodeReconciler(runtime)
    assert await node.apply(node_config(("agent.zedagent.debug.loglevel", "debug")))
    assert dict(runtime.current.unknown) == {"agent.zedagent.debug.loglevel": "debug"}


async def test_object_errors_make_apply_false(runtime: RuntimeItems) -> None:
    node = NodeReconciler(runtime)
    ok = await node.apply(node_config(("timer.config.interval", "30"), errors=2))
    assert ok is False
    assert not node.report.ok
    assert [e.id for e in node.report.object_errors] == ["id0", "id1"]
    assert node.report.item_errors == []
    # The valid part still applied.
    assert runtime.current.int("timer.config.interval") == 30
    # A later clean config clears the report.
    assert await node.apply(node_config(("timer.config.interval", "30")))
    assert node.report.object_errors == []


async def test_initial_runtime_adopted(listener: Listener) -> None:
    runtime = RuntimeItems(parse_items([("timer.config.interval", "30")]))
    runtime.subscribe(listener)
    node = NodeReconciler(runtime)
    assert await node.apply(node_config(("timer.config.interval", "30")))
    assert listener.calls == []
    assert runtime.current.int("timer.config.interval") == 30


async def test_initial_runtime_item_removed_by_config() -> None:
    runtime = RuntimeItems(parse_items([("timer.config.interval", "30")]))
    lst = Listener()
    runtime.subscribe(lst)
    node = NodeReconciler(runtime)
    assert await node.apply(node_config())
    assert lst.calls == [{"timer.config.interval"}]
    assert runtime.current.int("timer.config.interval") == 60


async def test_every_configured_object_is_an_owner(runtime: RuntimeItems) -> None:
    """An app, network instance, volume or content tree in the config is reported even before it
    has items, so the controller never hears of it as deleted while it is configured."""
    from tools.bench import big_config

    node = NodeReconciler(runtime)
    config = from_proto(big_config(DEVICE, apps=2, nis=1, aces_per_app=0))
    assert await node.apply(config)
    kinds: dict[str, list[str]] = {}
    for owner in node.owners():
        kinds.setdefault(owner.kind, []).append(owner.state)
    assert kinds == {
        "app": ["pending", "pending"],
        "contenttree": ["pending", "pending"],
        "device": ["ok"],
        "networkinstance": ["pending"],
        "volume": ["pending", "pending"],
    }
    names = {o.name for o in node.owners() if o.kind == "app"}
    assert names == {"app-0", "app-1"}
