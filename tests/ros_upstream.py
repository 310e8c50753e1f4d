"""Reach the real Interbotix and ROS 2 launch code from the tests (no stand-ins).

The message packages are built by ``scripts/build_ros_test_msgs.sh`` in ``make test``'s set-up
(into ``$VENV/ros_test_ws``, or ``THEIA_ROS_TEST_WS``); the unmodified upstream Python
sources are read in place from ``../shared/upstream``. :func:`activate` makes both importable
in this process; :func:`env` gives a subprocess the same; :class:`XsSdkSim` runs
Interbotix's own simulated driver node (``xs_sdk_sim.py``); :func:`colcon_install` and
:class:`Launch` run this package's launch files from a colcon install the way ``ros2 launch``
does (ros2cli has no wheel; its ``ros2launch`` package holds the verb's logic).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = Path(os.environ.get("THEIA_ROS_UPSTREAM", ROOT.parent / "shared" / "upstream"))
WS = Path(os.environ.get("THEIA_ROS_TEST_WS", Path(sys.prefix) / "ros_test_ws"))
IX = UPSTREAM / "interbotix"
XSARM = IX / "interbotix_ros_xsarms"
MOTOR_CONFIGS = XSARM / "interbotix_xsarm_control" / "config" / "wx250s.yaml"
MODE_CONFIGS = XSARM / "interbotix_xsarm_control" / "config" / "modes.yaml"
XACRO = XSARM / "interbotix_xsarm_descriptions" / "urdf" / "wx250s.urdf.xacro"
XS_SDK_SIM = IX / "interbotix_ros_xseries" / "interbotix_xs_sdk" / "scripts" / "xs_sdk_sim.py"
PY_SOURCES = [IX / "tf_transformations",
              IX / "interbotix_xs_toolbox" / "interbotix_xs_modules",
              IX / "interbotix_common_toolbox" / "interbotix_common_modules"]
LAUNCH_SOURCES = [UPSTREAM / "ros2_launch" / n
                  for n in ("launch", "launch_xml", "launch_yaml", "launch_ros", "ros2launch")]
PACKAGES = ("interbotix_xs_msgs", "composition_interfaces")


def domain_id() -> int:
    """A ROS domain for this process, apart from the node tests' 100..199."""
    return 1 + os.getpid() % 99


def missing() -> str | None:
    """Why the upstream tests cannot run here, or None."""
    if not XS_SDK_SIM.is_file():
        return f"no upstream sources at {UPSTREAM}"
    if not (WS / "install" / "setup.bash").is_file():
        return (f"no message workspace at {WS}; run make test-setup (or "
                f"scripts/build_ros_test_msgs.sh {sys.prefix} {WS})")
    return None


def require() -> None:
    reason = missing()
    if reason:
        pytest.skip(reason)


def _site(pkg: str) -> Path:
    return WS / "install" / pkg / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
        / "site-packages"


def python_path() -> list[str]:
    return [str(_site(p)) for p in PACKAGES] + [str(p) for p in PY_SOURCES + LAUNCH_SOURCES]


def _prefixes() -> list[str]:
    return [str(WS / "install" / p) for p in PACKAGES] + [str(WS / "index")]


def env(extra_pythonpath: list[str] | None = None, repo: bool = True) -> dict[str, str]:
    """Environment for a subprocess that imports the messages and upstream modules (and this
    repository, unless ``repo`` is False: a colcon install provides it)."""
    e = dict(os.environ)

    def prepend(key: str, values: list[str]) -> None:
        old = e.get(key)
        e[key] = os.pathsep.join(values + ([old] if old else []))

    prepend("PYTHONPATH", [str(ROOT)] * repo + (extra_pythonpath or []) + python_path())
    prepend("AMENT_PREFIX_PATH", [*_prefixes(), sys.prefix])
    prepend("LD_LIBRARY_PATH", [str(WS / "install" / p / "lib") for p in PACKAGES])
    e.setdefault("PYTHONUNBUFFERED", "1")
    return e


@functools.cache
def activate() -> None:
    """Import path, ament index and the generated libraries for this process.

    The loader reads LD_LIBRARY_PATH only at start-up, so the generated libraries are loaded
    here by path, in dependency order; the typesupport extension modules then find them.
    """
    require()
    for p in reversed(python_path()):
        if p not in sys.path:
            sys.path.insert(0, p)
    e = env()
    for key in ("AMENT_PREFIX_PATH", "LD_LIBRARY_PATH"):
        os.environ[key] = e[key]
    libs = [lib for p in PACKAGES for lib in sorted((WS / "install" / p / "lib").glob("*.so"))]
    for _ in range(len(libs)):
        failed = []
        for lib in libs:
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(lib)
        if not failed or len(failed) == len(libs):
            break
        libs = failed


@functools.cache
def wx250s_urdf() -> str:
    """The wx250s URDF as Interbotix's launch expands it (xacro robot_model:=wx250s)."""
    activate()
    import xacro

    return xacro.process_file(str(XACRO), mappings={"robot_model": "wx250s"}).toxml()


class XsSdkSim:
    """Interbotix's ``xs_sdk_sim.py`` in a subprocess under namespace ``/<ns>``."""

    def __init__(self, ns: str, log_path: Path) -> None:
        self.ns = ns
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> XsSdkSim:
        activate()
        cmd = [sys.executable, str(XS_SDK_SIM), "--ros-args", "-r", f"__ns:=/{self.ns}",
               "-p", f"motor_configs:={MOTOR_CONFIGS}", "-p", f"mode_configs:={MODE_CONFIGS}",
               "-p", f"robot_description:={wx250s_urdf()}"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.proc)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()


def stop(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> int | None:
    """SIGINT, then SIGKILL after ``timeout_s``; the exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def wait_for(predicate, timeout_s: float, period_s: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())


# What ``ros2 launch <package> <file> [args]`` runs (ros2launch/command/launch.py, minus the
# ros2cli argument parsing): the launch file from the package's share folder, interactive.
LAUNCH_MAIN = ("import sys; from ros2launch.api import get_share_file_path_from_package as f, "
               "launch_a_launch_file as run; sys.exit(run(launch_file_path=f(package_name="
               "sys.argv[1], file_name=sys.argv[2]), launch_file_arguments=sys.argv[3:]))")


def colcon_install(out: Path) -> Path:
    """``colcon build --symlink-install`` of this package into ``out``; its setup.bash."""
    setup = out / "install" / "setup.bash"
    if setup.is_file():
        return setup
    out.mkdir(parents=True, exist_ok=True)
    e = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix,
             PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "colcon"), "build", "--base-paths", str(ROOT),
         "--packages-select", "theia_ros", "--symlink-install",
         "--event-handlers", "console_direct-"],
        cwd=out, env=e, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not setup.is_file():
        raise RuntimeError(f"colcon build of theia_ros failed:\n{proc.stdout[-3000:]}"
                           f"{proc.stderr[-3000:]}")
    return setup


class Launch:
    """``ros2 launch theia_ros <file> <args>`` from a colcon install, in its own process
    group; :meth:`interrupt` is a Ctrl-C in its terminal (SIGINT to the whole group)."""

    def __init__(self, setup_bash: Path, launch_file: str, args: list[str],
                 log_path: Path, domain: int) -> None:
        self.log_path = log_path
        main = f"{sys.executable} -c {shlex.quote(LAUNCH_MAIN)} theia_ros {launch_file} " \
            + " ".join(shlex.quote(a) for a in args)
        e = env(repo=False)
        e["ROS_DOMAIN_ID"] = str(domain)
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            ["bash", "-c", f"source {shlex.quote(str(setup_bash))} && exec {main}"], env=e,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def interrupt(self, timeout_s: float = 60.0) -> int:
        """SIGINT to every process of the launch; the launch's exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
