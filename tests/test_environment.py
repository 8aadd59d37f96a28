"""Jetson detection from the files a Jetson really has (recreated here, no Jetson in CI)."""

import pytest

from sk_edge import environment


@pytest.mark.parametrize(
    "text, release",
    [
        # first lines of /etc/nv_tegra_release as shipped by JetPack 6.2 and 5.1.2
        ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025", "36.4.3"),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023", "35.4.1"),
        ("# R36 (release), REVISION: 4, GCID: 37537400, BOARD: generic", "36.4.0"),
        ("not a release file", None),
    ],
)
def test_parse_l4t_release(text, release):
    assert environment.parse_l4t_release(text) == release


def test_jetson_info_from_release_files(tmp_path, monkeypatch):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(environment, "TEGRA_RELEASE", release)
    monkeypatch.setattr(environment, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(environment, "_jetpack_from_dpkg", lambda: None)
    assert environment.jetson_info() == {
        "model": "NVIDIA Jetson AGX Orin Developer Kit",
        "l4t": "36.4.3",
        "jetpack": "6.2",
    }


def test_not_a_jetson(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "TEGRA_RELEASE", tmp_path / "absent")
    assert environment.jetson_info() is None
