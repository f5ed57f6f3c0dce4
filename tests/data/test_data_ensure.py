"""``scripts/ensure-data``: which commands it runs, on a fake PATH with recording stubs.

The stubs (``id``, ``sudo``, ``apt-get``) append their name and arguments to a log; ``apt-get
install`` also writes the four files into the fake system folder, as the Debian package would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ensure-data"
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
BASH = "/bin/bash"

pytestmark = pytest.mark.skipif(not Path(BASH).is_file(), reason="needs /bin/bash")


def _stub(path: Path, body: str) -> None:
    path.write_text(f"#!{BASH}\n{body}\n")
    path.chmod(0o755)


class Machine:
    """A fake machine: a PATH of stubs, a log, a system data folder, a user id."""

    def __init__(self, tmp: Path, uid: int = 0, sudo_ok: bool = False, apt: bool = True) -> None:
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.log = tmp / "log"
        self.log.write_text("")
        self.system = tmp / "system"
        self.system.mkdir()
        record = f'echo "${{0##*/}} $* [DEBIAN_FRONTEND=${{DEBIAN_FRONTEND:-}}]" >> {self.log}'
        _stub(self.bin / "id", f'{record}\n[ "$1" = -u ] && echo {uid}')
        sudo_run = f'shift; PATH="{self.bin}:/usr/bin:/bin" exec "$@"'
        _stub(self.bin / "sudo", f"{record}\n{sudo_run if sudo_ok else 'exit 1'}")
        install = "".join(f': > "{self.system}/{f}"\n' for f in FILES)
        if apt:
            _stub(self.bin / "apt-get", f'{record}\nif [ "$1" = install ]; then\n{install}fi')

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        full = {"PATH": str(self.bin), "CAMWALL_SYSTEM_DATA": str(self.system), **env}
        return subprocess.run(
            [BASH, str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60
        )

    def calls(self) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if not ln.startswith("id ")]


def _fill(folder: Path, names: tuple[str, ...] = FILES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")


def test_script_is_executable_bash():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")


def test_data_present_is_a_no_op(tmp_path):
    m = Machine(tmp_path, uid=0)
    _fill(m.system)
    res = m.run()
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    assert m.log.read_text() == ""  # not even `id` is asked


def test_root_installs_the_package(tmp_path):
    m = Machine(tmp_path, uid=0)
    res = m.run()
    assert res.returncode == 0, res.stderr
    assert m.calls() == [
        "apt-get update [DEBIAN_FRONTEND=]",
        "apt-get install -y dataset-fashion-mnist [DEBIAN_FRONTEND=noninteractive]",
    ]
    assert sorted(p.name for p in m.system.iterdir()) == sorted(FILES)


def test_passwordless_sudo_installs_the_package(tmp_path):
    m = Machine(tmp_path, uid=1000, sudo_ok=True)
    res = m.run()
    assert res.returncode == 0, res.stderr
    assert m.calls() == [
        "sudo -n true [DEBIAN_FRONTEND=]",
        "sudo -n apt-get update [DEBIAN_FRONTEND=]",
        "apt-get update [DEBIAN_FRONTEND=]",
        (
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist "
            "[DEBIAN_FRONTEND=]"
        ),
        "apt-get install -y dataset-fashion-mnist [DEBIAN_FRONTEND=noninteractive]",
    ]


def test_sudo_with_a_password_says_what_to_run(tmp_path):
    m = Machine(tmp_path, uid=1000, sudo_ok=False)
    res = m.run()
    assert res.returncode == 1
    assert m.calls() == ["sudo -n true [DEBIAN_FRONTEND=]"]  # no apt-get
    lines = res.stderr.splitlines()
    assert len(lines) == 1
    assert "run: sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" in lines[0]
    assert all(f in lines[0] for f in FILES)
    assert "CAMWALL_DATA" in lines[0]


def test_no_apt_get_says_where_to_put_the_files(tmp_path):
    m = Machine(tmp_path, uid=0, apt=False)
    res = m.run()
    assert res.returncode == 1
    assert m.calls() == []
    (line,) = res.stderr.splitlines()
    assert f"not found in {m.system} and apt-get is not available" in line
    assert all(f in line for f in FILES)
    assert "set CAMWALL_DATA" in line


def test_package_without_the_files_is_reported(tmp_path):
    m = Machine(tmp_path, uid=0)
    (m.bin / "apt-get").write_text(f'#!{BASH}\necho "apt-get $*" >> {m.log}\n')
    res = m.run()
    assert res.returncode == 1
    assert len(m.calls()) == 2
    (line,) = res.stderr.splitlines()
    assert f"dataset-fashion-mnist is installed but {m.system} lacks" in line


def test_failed_install_is_reported(tmp_path):
    m = Machine(tmp_path, uid=0)
    (m.bin / "apt-get").write_text(f'#!{BASH}\necho "apt-get $*" >> {m.log}\nexit 100\n')
    res = m.run()
    assert res.returncode == 1
    assert m.calls() == ["apt-get update"]  # install is not tried after a failed update
    assert "apt-get install -y dataset-fashion-mnist failed" in res.stderr


@pytest.mark.parametrize("complete", [True, False])
def test_camwall_data_is_never_touched(tmp_path, complete):
    """With CAMWALL_DATA set nothing is installed, even as root with the system folder empty."""
    m = Machine(tmp_path, uid=0, sudo_ok=True)
    mine = tmp_path / "mine"
    _fill(mine, FILES if complete else FILES[:3])
    before = {p.name: p.stat().st_mtime_ns for p in mine.iterdir()}
    res = m.run(CAMWALL_DATA=str(mine))
    assert m.log.read_text() == ""
    assert {p.name: p.stat().st_mtime_ns for p in mine.iterdir()} == before
    assert list(m.system.iterdir()) == []
    if complete:
        assert (res.returncode, res.stderr) == (0, "")
    else:
        assert res.returncode == 1
        (line,) = res.stderr.splitlines()
        assert f"CAMWALL_DATA={mine} lacks t10k-labels-idx1-ubyte.gz;" in line


def test_make_targets_ensure_the_data_first():
    text = (REPO / "Makefile").read_text()
    for target in ("test", "test-slow", "bench"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{target}:")]
        assert line.split(":")[1].split()[0] == "data", line
    assert "data:\n\tscripts/ensure-data\n" in text
    assert "\nscripts/ensure-data\n" in (REPO / ".ci" / "run").read_text()
