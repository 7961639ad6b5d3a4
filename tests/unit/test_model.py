# SPDX-License-Identifier: Apache-2.0
"""agent.model: EdgeDevConfig -> NodeConfig validation, ACEs, config items and diffs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.model import acl
from agent.model.config import NodeConfig, ObjectError, diff_configs, diff_kind, from_proto
from agent.model.configitems import SPECS, ConfigItems, ItemKind, ItemSpec, parse_items
from agent.wire.pb.config import (
    appconfig_pb2,
    devcommon_pb2,
    devconfig_pb2,
    fw_pb2,
    netconfig_pb2,
    netinst_pb2,
    storage_pb2,
)

DEVICE = "11111111-1111-4111-8111-111111111111"
DS = "22222222-2222-4222-8222-222222222222"
CT = "33333333-3333-4333-8333-333333333333"
VOL = "44444444-4444-4444-8444-444444444444"
NI = "55555555-5555-4555-8555-555555555555"
APP = "66666666-6666-4666-8666-666666666666"
APP2 = "77777777-7777-4777-8777-777777777777"
MISSING = "99999999-9999-4999-8999-999999999999"
SHA = "ab" * 32


def ace(
    matches: list[tuple[str, str]],
    *,
    ace_id: int = 1,
    name: str = "",
    actions: list[fw_pb2.ACEAction] | None = None,
) -> fw_pb2.ACE:
    return fw_pb2.ACE(
        id=ace_id,
        name=name,
        matches=[fw_pb2.ACEMatch(type=t, value=v) for t, v in matches],
        actions=actions or [],
    )


def app_msg(
    uuid: str,
    name: str,
    *,
    network: str = NI,
    volume: str | None = VOL,
    acls: list[fw_pb2.ACE] | None = None,
) -> appconfig_pb2.AppInstanceConfig:
    msg = appconfig_pb2.AppInstanceConfig(
        uuidandversion=devcommon_pb2.UUIDandVersion(uuid=uuid, version="3"),
        displayname=name,
        activate=True,
        interfaces=[
            netconfig_pb2.NetworkAdapter(
                name="eth0",
                networkId=network,
                addr="10.1.0.5",
                macAddress="02:00:00:00:00:01",
                acls=acls if acls is not None else [ace([("host", "Example.COM.")])],
            )
        ],
        userData="I2Nsb3VkLWNvbmZpZw==",
        start_delay_in_seconds=7,
    )
    msg.fixedresources.memory = 524288
    msg.fixedresources.vcpus = 2
    msg.restart.counter = 4
    msg.purge.counter = 1
    if volume is not None:
        msg.volumeRefList.append(
            appconfig_pb2.VolumeRef(uuid=volume, generationCount=2, mount_dir="/data")
        )
    return msg


def base_config() -> devconfig_pb2.EdgeDevConfig:
    """A complete, valid config: datastore <- content tree <- volume <- app -> network."""
    cfg = devconfig_pb2.EdgeDevConfig(
        id=devcommon_pb2.UUIDandVersion(uuid=DEVICE, version="17"),
        datastores=[
            storage_pb2.DatastoreConfig(
                id=DS, dType=storage_pb2.DsHttps, fqdn="https://images.example", dpath="eve"
            )
        ],
        contentInfo=[
            storage_pb2.ContentTree(
                uuid=CT,
                dsId=DS,
                URL="alpine.qcow2",
                iformat=storage_pb2.QCOW2,
                sha256=SHA.upper(),
                maxSizeBytes=1 << 30,
                displayName="alpine",
                generation_count=3,
            )
        ],
        volumes=[
            storage_pb2.Volume(
                uuid=VOL,
                origin=storage_pb2.VolumeContentOrigin(
                    type=storage_pb2.VCOT_DOWNLOAD, downloadContentTreeID=CT
                ),
                generationCount=2,
                maxsizebytes=1 << 31,
                displayName="root-disk",
            )
        ],
        networkInstances=[
            netinst_pb2.NetworkInstanceConfig(
                uuidandversion=devcommon_pb2.UUIDandVersion(uuid=NI, version="1"),
                displayname="local-ni",
                instType=netinst_pb2.ZnetInstLocal,
                activate=True,
                port=devcommon_pb2.Adapter(name="uplink"),
                ipType=netinst_pb2.IPV4,
                mtu=1500,
            )
        ],
        apps=[app_msg(APP, "web")],
        configItems=[devcommon_pb2.ConfigItem(key="timer.config.interval", value="30")],
        controllercert_confighash="certhash-1",
        controller_epoch=5,
        maintenance_mode=True,
    )
    ni = cfg.networkInstances[0]
    ni.ip.subnet = "10.1.0.0/24"
    ni.ip.gateway = "10.1.0.1"
    ni.ip.dhcpRange.start = "10.1.0.10"
    ni.ip.dhcpRange.end = "10.1.0.200"
    ni.ip.dns.append("10.1.0.1")
    cfg.reboot.counter = 9
    cfg.config_timestamp.seconds = 1_700_000_000
    cfg.config_timestamp.nanos = 500_000_000
    return cfg


def errors_for(cfg: NodeConfig, kind: str) -> list[ObjectError]:
    return [e for e in cfg.errors if e.kind == kind]


# ---------------------------------------------------------------- valid config


def test_valid_config_kept_whole() -> None:
    cfg = from_proto(base_config())
    assert cfg.errors == ()
    assert cfg.device_uuid == DEVICE
    assert cfg.version == "17"
    assert cfg.timestamp == 1_700_000_000.5
    assert list(cfg.datastores) == [DS]
    assert list(cfg.content_trees) == [CT]
    assert list(cfg.volumes) == [VOL]
    assert list(cfg.network_instances) == [NI]
    assert list(cfg.apps) == [APP]
    assert cfg.reboot.counter == 9 and cfg.reboot.desired_state is False
    assert cfg.maintenance_mode is True
    assert cfg.controller_epoch == 5
    assert cfg.controllercert_confighash == "certhash-1"
    assert cfg.items.int("timer.config.interval") == 30


def test_valid_objects_fields() -> None:
    cfg = from_proto(base_config())
    ds = cfg.datastores[DS]
    assert (ds.ds_type, ds.fqdn, ds.dpath, ds.has_cipher) == (
        storage_pb2.DsHttps,
        "https://images.example",
        "eve",
        False,
    )
    tree = cfg.content_trees[CT]
    assert tree.datastore_ids == (DS,)
    assert tree.sha256 == SHA  # lower-cased
    assert (tree.name, tree.url, tree.generation) == ("alpine", "alpine.qcow2", 3)
    vol = cfg.volumes[VOL]
    assert (vol.content_tree_id, vol.max_size, vol.name) == (CT, 1 << 31, "root-disk")
    ni = cfg.network_instances[NI]
    assert (ni.subnet, ni.gateway, ni.dhcp_start, ni.dhcp_end) == (
        "10.1.0.0/24",
        "10.1.0.1",
        "10.1.0.10",
        "10.1.0.200",
    )
    assert ni.dns_servers == ("10.1.0.1",)
    assert (ni.port, ni.mtu, ni.version) == ("uplink", 1500, "1")
    app = cfg.apps[APP]
    assert (app.name, app.version, app.memory_kib, app.vcpus) == ("web", "3", 524288, 2)
    assert (app.restart_counter, app.purge_counter, app.start_delay) == (4, 1, 7)
    assert app.volumes[0].id == VOL and app.volumes[0].mount_dir == "/data"
    iface = app.interfaces[0]
    assert (iface.name, iface.network_id, iface.static_ip) == ("eth0", NI, "10.1.0.5")
    assert iface.acls[0].matches == (acl.AceMatch("host", "example.com"),)


def test_uuids_canonicalised() -> None:
    msg = base_config()
    msg.id.uuid = DEVICE.upper()
    msg.apps[0].uuidandversion.uuid = "{" + APP.upper() + "}"
    cfg = from_proto(msg)
    assert cfg.device_uuid == DEVICE
    assert list(cfg.apps) == [APP]


def test_ds_ids_list_preferred_over_dsid() -> None:
    msg = base_config()
    other = "88888888-8888-4888-8888-888888888888"
    msg.datastores.append(storage_pb2.DatastoreConfig(id=other, fqdn="mirror"))
    msg.contentInfo[0].ds_ids_list.extend([other, DS])
    cfg = from_proto(msg)
    assert cfg.errors == ()
    assert cfg.content_trees[CT].datastore_ids == (other, DS)


# ---------------------------------------------------------------- invalid apps


def with_second_app(bad: appconfig_pb2.AppInstanceConfig) -> devconfig_pb2.EdgeDevConfig:
    msg = base_config()
    msg.apps.insert(0, bad)
    return msg


INVALID_APPS: dict[str, Callable[[], appconfig_pb2.AppInstanceConfig]] = {
    "bad uuid": lambda: app_msg("not-a-uuid", "bad"),
    "unknown match type": lambda: app_msg(APP2, "bad", acls=[ace([("mystery", "x")])]),
    "port 70000": lambda: app_msg(APP2, "bad", acls=[ace([("lport", "70000")])]),
    "portmap without lport": lambda: app_msg(
        APP2,
        "bad",
        acls=[ace([("protocol", "tcp")], actions=[fw_pb2.ACEAction(portmap=True, appPort=80)])],
    ),
    "limit without rate": lambda: app_msg(
        APP2,
        "bad",
        acls=[ace([("ip", "10.0.0.1")], actions=[fw_pb2.ACEAction(limit=True, limitunit="s")])],
    ),
    "bad network ref uuid": lambda: app_msg(APP2, "bad", network="eth0"),
    "bad volume ref uuid": lambda: app_msg(APP2, "bad", volume="vol-1"),
    "control char in name": lambda: app_msg(APP2, "bad\nname"),
    "long name": lambda: app_msg(APP2, "x" * 257),
}


@pytest.mark.parametrize("case", sorted(INVALID_APPS))
def test_invalid_app_is_an_error_on_that_app_only(case: str) -> None:
    bad = INVALID_APPS[case]()
    cfg = from_proto(with_second_app(bad))
    assert list(cfg.apps) == [APP]
    assert len(cfg.errors) == 1
    err = cfg.errors[0]
    assert err.kind == "app"
    assert err.id == bad.uuidandversion.uuid[:64]
    # Everything else survives.
    assert list(cfg.network_instances) == [NI]
    assert list(cfg.volumes) == [VOL]
    assert list(cfg.content_trees) == [CT]
    assert list(cfg.datastores) == [DS]


def test_invalid_app_error_messages() -> None:
    def message(case: str) -> str:
        return from_proto(with_second_app(INVALID_APPS[case]())).errors[0].message

    assert "not a UUID" in message("bad uuid")
    assert "unknown ACE match type 'mystery'" in message("unknown match type")
    assert "'70000' is not a port number" in message("port 70000")
    assert "portmap action without an lport match" in message("portmap without lport")
    assert "limit without a positive limitrate" in message("limit without rate")
    assert "interface 'eth0'" in message("port 70000")


def test_app_with_valid_acls() -> None:
    acls = [
        ace(
            [("protocol", "TCP"), ("lport", "8080")],
            ace_id=3,
            name="web",
            actions=[fw_pb2.ACEAction(portmap=True, appPort=80)],
        ),
        ace(
            [("ip", "192.168.1.7/16"), ("fport", "0443")],
            ace_id=4,
            actions=[fw_pb2.ACEAction(limit=True, limitrate=10, limitunit="m", limitburst=5)],
        ),
        ace([("protocol", "47"), ("adapter", "uplink")], ace_id=5),
        ace([("host", "*.eve.example")], ace_id=6, actions=[fw_pb2.ACEAction(drop=True)]),
    ]
    msg = base_config()
    msg.apps.append(app_msg(APP2, "acl-app", acls=acls))
    cfg = from_proto(msg)
    assert cfg.errors == ()
    got = cfg.apps[APP2].interfaces[0].acls
    assert [a.id for a in got] == [3, 4, 5, 6]
    assert got[0].name == "web"
    assert got[0].matches == (acl.AceMatch("protocol", "tcp"), acl.AceMatch("lport", "8080"))
    assert got[0].actions == (acl.AceAction(portmap=True, app_port=80),)
    assert got[1].matches == (acl.AceMatch("ip", "192.168.0.0/16"), acl.AceMatch("fport", "443"))
    assert got[1].actions == (
        acl.AceAction(limit=True, limit_rate=10, limit_unit="minute", limit_burst=5),
    )
    assert got[2].matches == (acl.AceMatch("protocol", "47"), acl.AceMatch("adapter", "uplink"))
    assert got[3].actions == (acl.AceAction(drop=True),)


@pytest.mark.parametrize(
    ("matches", "actions", "fragment"),
    [
        ([("ip", "10.0.0.1")], [fw_pb2.ACEAction(), fw_pb2.ACEAction(drop=True)],
         "2 actions"),
        ([("lport", "22")], [fw_pb2.ACEAction(drop=True, portmap=True, appPort=22)],
         "combines drop, limit and portmap"),
        ([("ip", "10.0.0.1")], [fw_pb2.ACEAction(drop=True, limit=True, limitrate=1)],
         "combines"),
        ([("host", "10.0.0.0/33")], [], "not a host name"),
        ([("ip", "10.0.0.1"), ("ip", "10.0.0.2")], [], "more than one ip match"),
        ([("host", "a.example"), ("ip", "10.0.0.2"), ("host", "10.0.0.3"),
          ("protocol", "tcp"), ("protocol", "6")], [], "more than one ip and protocol match"),
        ([("ip", "10.0.0.300")], [], "not an address"),
        ([("host", "bad host!")], [], "not a host name"),
        ([("protocol", "256")], [], "not a protocol"),
        ([("protocol", "bogus")], [], "not a protocol"),
        ([("protocol", "\u0663")], [], "not a protocol"),  # a digit, but not ASCII
        ([("lport", "0")], [], "not a port number"),
        ([("fport", "-1")], [], "not a port number"),
        ([("adapter", "has space")], [], "not a label"),
        ([("ip", "10.0.0.1")], [fw_pb2.ACEAction(limit=True, limitrate=5, limitunit="wk")],
         "limitunit"),
        ([("lport", "22")], [fw_pb2.ACEAction(portmap=True, appPort=0)], "appPort 0"),
        ([("lport", "22")], [fw_pb2.ACEAction(portmap=True, appPort=65536)], "appPort 65536"),
    ],
)  # fmt: skip
def test_parse_ace_rejections(
    matches: list[tuple[str, str]], actions: list[fw_pb2.ACEAction], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        acl.parse_ace(ace(matches, actions=actions))


def test_parse_ace_as_eve_reads_it() -> None:
    # No match: everything (EVE's match-all ACE), allowed by default.
    got = acl.parse_ace(ace([]))
    assert (got.matches, got.actions) == ((), ())
    # A host match naming an address or a prefix is an ip match (zedrouter does the same).
    got = acl.parse_ace(ace([("host", "192.0.2.7"), ("protocol", "tcp")]))
    assert got.matches == (acl.AceMatch("ip", "192.0.2.7/32"), acl.AceMatch("protocol", "tcp"))
    got = acl.parse_ace(ace([("host", "2001:db8::/32")]))
    assert got.matches == (acl.AceMatch("ip", "2001:db8::/32"),)
    assert acl.parse_ace(ace([("host", "a.example")])).matches == (
        acl.AceMatch("host", "a.example"),
    )


@pytest.mark.parametrize(
    ("given", "kept", "number"),
    [("TCP", "tcp", 6), ("gre", "gre", 47), ("IPSEC-ESP", "ipsec-esp", 50), ("006", "6", 6),
     ("89", "89", 89), ("all", "all", None), ("ip", "ip", None), ("0", "0", None)],
)  # fmt: skip
def test_protocols_as_etc_protocols_names_them(given: str, kept: str, number: int | None) -> None:
    # EVE takes any name of /etc/protocols (iptables resolves it), and "all".
    (match,) = acl.parse_ace(ace([("protocol", given)])).matches
    assert match == acl.AceMatch("protocol", kept)
    assert acl.protocol_number(match.value) == number


def test_several_adapter_matches_name_more_ports() -> None:
    portmap = [fw_pb2.ACEAction(portmap=True, appPort=22)]
    matches = [("protocol", "tcp"), ("lport", "22"), ("adapter", "a"), ("adapter", "b")]
    got = acl.parse_ace(ace(matches, actions=portmap))
    assert [x.value for x in got.matches if x.type == "adapter"] == ["a", "b"]


def test_parse_ace_defaults_and_limits() -> None:
    got = acl.parse_ace(
        ace([("ip", "fd00::1")], actions=[fw_pb2.ACEAction(limit=True, limitrate=1)])
    )
    assert got.matches == (acl.AceMatch("ip", "fd00::1/128"),)
    assert got.actions[0].limit_unit == "second"  # empty unit means per second
    assert got.actions == (acl.AceAction(limit=True, limit_rate=1, limit_unit="second"),)
    with pytest.raises(ValueError, match="name longer"):
        acl.parse_ace(ace([("ip", "10.0.0.1")], name="n" * 257))
    assert acl.parse_ace(ace([("lport", "65535")])).matches[0].value == "65535"


@pytest.mark.parametrize(
    ("vlan", "ok"), [(0, True), (2, True), (4093, True), (1, False), (4094, False)]
)
def test_access_vlan_range(vlan: int, ok: bool) -> None:
    msg = base_config()
    msg.apps[0].interfaces[0].access_vlan_id = vlan
    cfg = from_proto(msg)
    assert (APP in cfg.apps) is ok
    if not ok:
        assert "access_vlan_id" in cfg.errors[0].message


def test_user_data_size_limit() -> None:
    msg = base_config()
    msg.apps[0].userData = "x" * (256 * 1024 + 1)
    cfg = from_proto(msg)
    assert cfg.apps == {}
    assert "userData larger" in errors_for(cfg, "app")[0].message


# ---------------------------------------------------------------- other invalid objects


def test_bad_sha256_drops_tree_and_its_dependents() -> None:
    msg = base_config()
    msg.contentInfo[0].sha256 = "abc"
    cfg = from_proto(msg)
    assert cfg.content_trees == {}
    assert cfg.volumes == {}
    assert cfg.apps == {}
    assert [e.kind for e in cfg.errors] == ["contenttree", "volume", "app"]
    assert "sha256" in cfg.errors[0].message
    assert list(cfg.network_instances) == [NI]


def test_negative_volume_size() -> None:
    msg = base_config()
    msg.volumes[0].maxsizebytes = -1
    cfg = from_proto(msg)
    assert cfg.volumes == {}
    assert errors_for(cfg, "volume")[0].message == "maxsizebytes is negative"


def test_invalid_datastore_id() -> None:
    msg = base_config()
    msg.datastores[0].id = "ds-1"
    cfg = from_proto(msg)
    assert cfg.datastores == {}
    errs = errors_for(cfg, "datastore")
    assert len(errs) == 1 and errs[0].id == "ds-1"
    # The tree naming DS now points at nothing.
    assert f"refers to missing datastore {DS}" in errors_for(cfg, "contenttree")[0].message


# ---------------------------------------------------------------- dangling references


def test_app_missing_network_instance() -> None:
    msg = base_config()
    msg.apps.append(app_msg(APP2, "orphan", network=MISSING))
    cfg = from_proto(msg)
    assert list(cfg.apps) == [APP]
    (err,) = cfg.errors
    assert (err.kind, err.id, err.name) == ("app", APP2, "orphan")
    assert err.message == f"refers to missing networkinstance {MISSING}"


def test_app_missing_volume() -> None:
    msg = base_config()
    msg.apps.append(app_msg(APP2, "orphan", volume=MISSING))
    cfg = from_proto(msg)
    assert list(cfg.apps) == [APP]
    (err,) = cfg.errors
    assert err.message == f"refers to missing volume {MISSING}"


def test_app_missing_both_lists_both() -> None:
    msg = base_config()
    msg.apps.append(app_msg(APP2, "orphan", volume=MISSING, network=MISSING))
    (err,) = from_proto(msg).errors
    assert f"volume {MISSING}" in err.message
    assert f"networkinstance {MISSING}" in err.message


def test_volume_missing_content_tree_drops_volume_and_app() -> None:
    msg = base_config()
    msg.volumes[0].origin.downloadContentTreeID = MISSING
    msg.apps.append(app_msg(APP2, "no-volume", volume=None))
    cfg = from_proto(msg)
    assert cfg.volumes == {}
    assert list(cfg.apps) == [APP2]
    assert list(cfg.content_trees) == [CT]
    vol_err, app_err = cfg.errors
    assert (vol_err.kind, vol_err.id) == ("volume", VOL)
    assert vol_err.message == f"refers to missing contenttree {MISSING}"
    assert (app_err.kind, app_err.id) == ("app", APP)
    assert app_err.message == f"refers to missing volume {VOL}"


def test_content_tree_missing_datastore_cascades() -> None:
    msg = base_config()
    msg.contentInfo[0].dsId = MISSING
    cfg = from_proto(msg)
    assert cfg.content_trees == {} and cfg.volumes == {} and cfg.apps == {}
    assert list(cfg.datastores) == [DS]
    assert list(cfg.network_instances) == [NI]
    assert [(e.kind, e.message) for e in cfg.errors] == [
        ("contenttree", f"refers to missing datastore {MISSING}"),
        ("volume", f"refers to missing contenttree {CT}"),
        ("app", f"refers to missing volume {VOL}"),
    ]


def test_blank_volume_needs_no_tree() -> None:
    msg = base_config()
    msg.volumes[0].origin.type = storage_pb2.VCOT_BLANK
    msg.volumes[0].origin.downloadContentTreeID = ""
    msg.ClearField("contentInfo")
    cfg = from_proto(msg)
    assert cfg.errors == ()
    assert cfg.volumes[VOL].content_tree_id == ""


# ---------------------------------------------------------------- duplicates


def test_duplicate_app_id_first_wins() -> None:
    msg = base_config()
    msg.apps.append(app_msg(APP, "copy"))
    cfg = from_proto(msg)
    assert cfg.apps[APP].name == "web"
    (err,) = cfg.errors
    assert (err.kind, err.id, err.name) == ("app", APP, "copy")
    assert err.message == f"duplicate app id {APP}"


def test_duplicate_detected_after_canonicalisation() -> None:
    msg = base_config()
    msg.apps.append(app_msg(APP.upper(), "upper"))
    cfg = from_proto(msg)
    assert len(cfg.apps) == 1
    assert "duplicate" in cfg.errors[0].message


def test_duplicate_datastore_and_network() -> None:
    msg = base_config()
    msg.datastores.append(storage_pb2.DatastoreConfig(id=DS, fqdn="other"))
    msg.networkInstances.append(
        netinst_pb2.NetworkInstanceConfig(
            uuidandversion=devcommon_pb2.UUIDandVersion(uuid=NI), displayname="dup"
        )
    )
    cfg = from_proto(msg)
    assert cfg.datastores[DS].fqdn == "https://images.example"
    assert cfg.network_instances[NI].name == "local-ni"
    assert sorted(e.kind for e in cfg.errors) == ["datastore", "networkinstance"]
    assert list(cfg.apps) == [APP]


# ---------------------------------------------------------------- device uuid


@pytest.mark.parametrize("uuid", ["", "device-1", "1234"])
def test_device_uuid_required(uuid: str) -> None:
    msg = base_config()
    msg.id.uuid = uuid
    with pytest.raises(ValueError, match="device uuid"):
        from_proto(msg)


def test_device_uuid_missing_entirely() -> None:
    with pytest.raises(ValueError):
        from_proto(devconfig_pb2.EdgeDevConfig())


def test_minimal_config() -> None:
    cfg = from_proto(devconfig_pb2.EdgeDevConfig(id=devcommon_pb2.UUIDandVersion(uuid=DEVICE)))
    assert cfg.errors == ()
    assert cfg.apps == {} and cfg.timestamp == 0.0
    assert cfg.items.int("timer.config.interval") == 60


# ---------------------------------------------------------------- config items


def items_config(*pairs: tuple[str, str]) -> NodeConfig:
    msg = base_config()
    msg.ClearField("configItems")
    msg.configItems.extend(devcommon_pb2.ConfigItem(key=k, value=v) for k, v in pairs)
    return from_proto(msg)


def test_config_items_valid() -> None:
    cfg = items_config(
        ("timer.config.interval", " 120 "),
        ("maintenance.mode", "TRUE"),
        ("debug.default.loglevel", "debug"),
        ("network.fallback.any.eth", "off"),
    )
    assert cfg.errors == ()
    assert cfg.items.int("timer.config.interval") == 120
    assert cfg.items.bool("maintenance.mode") is True
    assert cfg.items.get("debug.default.loglevel") == "debug"
    assert cfg.items.bool("network.fallback.any.eth") is False
    assert cfg.items.int("timer.metric.interval") == 60  # default


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("timer.config.interval", "1", "1 outside [5, 86400]"),
        ("timer.config.interval", "86401", "outside"),
        ("timer.config.interval", "abc", "'abc' is not an integer"),
        ("timer.config.interval", "1.5", "not an integer"),
        ("timer.config.interval", "", "not an integer"),
        ("maintenance.mode", "maybe", "not a boolean"),
        ("network.download.max.cost", "256", "outside [0, 255]"),
        ("timer.deviceinfo.interval", str(2**32), "outside"),
    ],
)
def test_config_item_refused(key: str, value: str, fragment: str) -> None:
    cfg = items_config((key, value))
    (err,) = cfg.errors
    assert (err.kind, err.id) == ("configitem", key)
    assert fragment in err.message
    assert cfg.items.get(key) == SPECS[key].default
    assert key not in cfg.items.values
    assert list(cfg.apps) == [APP]  # other objects unaffected


def test_unknown_config_item() -> None:
    cfg = items_config(("timer.bogus", "5"), ("timer.config.interval", "30"))
    (err,) = cfg.errors
    assert (err.kind, err.id) == ("configitem", "timer.bogus")
    assert "unknown config item" in err.message
    assert cfg.items.unknown == {"timer.bogus": "5"}
    assert cfg.items.int("timer.config.interval") == 30
    assert cfg.items.explicit() == {"timer.config.interval": "30", "timer.bogus": "5"}


def test_agent_key_accepted_without_error() -> None:
    cfg = items_config(("agent.zedagent.debug.loglevel", "debug"))
    assert cfg.errors == ()
    assert cfg.items.unknown == {"agent.zedagent.debug.loglevel": "debug"}


def test_config_items_typed_accessors() -> None:
    items = parse_items([("maintenance.mode", "yes")])
    assert items.bool("maintenance.mode") is True
    with pytest.raises(TypeError):
        items.int("maintenance.mode")
    with pytest.raises(TypeError):
        items.bool("timer.config.interval")
    with pytest.raises(KeyError):
        items.get("no.such.item")
    assert ConfigItems().int("timer.cert.interval") == 86400
    assert items.explicit() == {"maintenance.mode": "true"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("Enabled", "enabled"), ("true", "enabled"), ("false", "disabled"), ("none", "none")],
)
def test_tristate(text: str, value: str) -> None:
    spec = ItemSpec("x", ItemKind.TRISTATE, "none")
    assert spec.parse(text) == value


def test_tristate_and_string_limits() -> None:
    with pytest.raises(ValueError, match="enabled/disabled/none"):
        ItemSpec("x", ItemKind.TRISTATE, "none").parse("on")
    spec = ItemSpec("s", ItemKind.STRING, "")
    assert spec.parse("  ssh-ed25519 AAAA  ") == "ssh-ed25519 AAAA"
    with pytest.raises(ValueError, match="64 KiB"):
        spec.parse("a" * 65537)


def test_specs_match_eve_defaults() -> None:
    """A few pins from eve-api.md §7.3 (default, minimum, maximum)."""
    pins = {
        "timer.config.interval": (60, 5, 86400),
        "timer.metric.interval": (60, 5, 3600),
        "timer.deviceinfo.interval": (600, 30, 2**32 - 1),
        "timer.cert.interval": (86400, 60, 2**32 - 1),
        "timer.send.timeout": (120, 0, 3600),
        "timer.reboot.no.network": (604800, 120, 2**32 - 1),
        "timer.test.baseimage.update": (600, 30, 3600),
    }
    for name, (default, low, high) in pins.items():
        spec = SPECS[name]
        assert (spec.default, spec.minimum, spec.maximum) == (default, low, high), name


# ---------------------------------------------------------------- diffs


def test_diff_from_nothing() -> None:
    new = from_proto(base_config())
    diff = diff_configs(None, new)
    assert diff["app"].added == (APP,)
    assert diff["datastore"].added == (DS,)
    assert diff["configitem"].added == ("timer.config.interval",)
    assert all(not d.changed and not d.removed for d in diff.values())
    assert set(diff) == {
        "datastore",
        "contenttree",
        "volume",
        "networkinstance",
        "app",
        "configitem",
    }


def test_diff_same_config_is_empty() -> None:
    a, b = from_proto(base_config()), from_proto(base_config())
    assert all(d.empty for d in diff_configs(a, b).values())


def test_diff_added_changed_removed() -> None:
    old = from_proto(base_config())
    msg = base_config()
    msg.apps[0].fixedresources.memory = 1048576  # changed
    msg.apps.append(app_msg(APP2, "second"))  # added
    msg.ClearField("datastores")  # removed (and the tree, volume, first apps with it)
    msg.contentInfo[0].ClearField("dsId")
    msg.ClearField("configItems")
    msg.configItems.append(devcommon_pb2.ConfigItem(key="timer.metric.interval", value="30"))
    new = from_proto(msg)
    diff = diff_configs(old, new)
    assert diff["app"].added == (APP2,)
    assert diff["app"].changed == (APP,)
    assert diff["app"].removed == ()
    assert diff["datastore"].removed == (DS,)
    assert diff["contenttree"].changed == (CT,)  # no datastore any more
    assert diff["volume"].empty and diff["networkinstance"].empty
    assert diff["configitem"].added == ("timer.metric.interval",)
    assert diff["configitem"].removed == ("timer.config.interval",)


def test_diff_kind() -> None:
    d = diff_kind({"a": 1, "b": 2, "c": 3}, {"b": 2, "c": 4, "d": 5})
    assert (d.added, d.changed, d.removed) == (("d",), ("c",), ("a",))
    assert not d.empty
    assert diff_kind({}, {}).empty
