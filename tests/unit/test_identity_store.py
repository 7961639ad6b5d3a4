"""What the node keeps from ``/uuid``."""

from __future__ import annotations

from pathlib import Path

from agent.link.identity import load_uuid, store_uuid
from agent.settings import NodePaths

UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


def test_uuid_is_stored_and_read_back(tmp_path: Path) -> None:
    paths = NodePaths.from_root(tmp_path)
    store_uuid(paths, UUID)
    assert load_uuid(paths) == UUID
    assert not paths.hardware_model.exists()


def test_manufacturer_and_product_together_set_the_hardware_model(tmp_path: Path) -> None:
    paths = NodePaths.from_root(tmp_path)
    store_uuid(paths, UUID, manufacturer="Acme", product_name="Box 9\nx")
    assert paths.hardware_model.read_text() == "Acme.Box 9 x\n"


def test_one_of_them_alone_does_not(tmp_path: Path) -> None:
    paths = NodePaths.from_root(tmp_path)
    store_uuid(paths, UUID, manufacturer="Acme")
    assert not paths.hardware_model.exists()
