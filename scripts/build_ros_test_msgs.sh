#!/usr/bin/env bash
# Build the real interbotix_xs_msgs and composition_interfaces from their upstream definitions
# with the PyPI ROS wheels, for the tests that run Interbotix's own Python API, its simulated
# driver and the ROS 2 launch system. Cached: rebuilt only when the definitions change.
#
#   scripts/build_ros_test_msgs.sh VENV OUT [UPSTREAM]
#
# VENV: the test virtual environment (holds the rosidl generator wheels); OUT: the workspace
# (OUT/install/setup.bash afterwards); UPSTREAM: the unmodified upstream sources
# (default ../shared/upstream next to the repository). Without UPSTREAM the build is skipped
# and the tests that need it say so.
set -euo pipefail

VENV=$(cd "${1:?usage: $0 VENV OUT [UPSTREAM]}" && pwd)
OUT=${2:?usage: $0 VENV OUT [UPSTREAM]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
UPSTREAM=${3:-$ROOT/../shared/upstream}
PY=$VENV/bin/python

MSGS=$UPSTREAM/interbotix/interbotix_ros_xseries/interbotix_xs_msgs
COMPOSITION=$UPSTREAM/ros2_launch/composition_interfaces
if [[ ! -d $MSGS || ! -d $COMPOSITION ]]; then
    echo "build_ros_test_msgs: no upstream sources at $UPSTREAM; skipping (the Interbotix" \
         "and launch tests will be skipped)" >&2
    exit 0
fi

key=$( (cd "$MSGS" && find . -type f | sort | xargs sha256sum;
        cd "$COMPOSITION" && find . -type f | sort | xargs sha256sum;
        "$PY" -c 'import sys; print(sys.version)'; echo "$VENV") | sha256sum | cut -c1-16)
if [[ -f $OUT/.key && $(cat "$OUT/.key") == "$key" && -f $OUT/install/setup.bash ]]; then
    echo "build_ros_test_msgs: $OUT is up to date"
    exit 0
fi

# The std_msgs wheel's CMake export names the include dirs of the interpreter it was built
# with (/opt/python/...); point them at this interpreter's, or every dependent build fails.
py_include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$PY" -c 'import numpy, os; print(os.path.join(os.path.dirname(numpy.__file__), "_core", "include"))')
export_file=$VENV/share/std_msgs/cmake/export_std_msgs__rosidl_generator_pyExport.cmake
for dir in $(grep -o '/opt/python/[^";]*' "$export_file" | sort -u); do
    [[ -e $dir ]] && continue
    case $dir in
        */numpy/_core/include) target=$np_include ;;
        */include/python3*) target=$py_include ;;
        *) echo "build_ros_test_msgs: $export_file names $dir; do not know what it is" >&2; exit 1 ;;
    esac
    mkdir -p "$(dirname "$dir")" 2>/dev/null && ln -sfn "$target" "$dir" || {
        echo "build_ros_test_msgs: cannot create $dir -> $target (run as root once)" >&2; exit 1; }
done

start=$(date +%s)
rm -rf "$OUT"
mkdir -p "$OUT/src"
cp -r "$MSGS" "$COMPOSITION" "$OUT/src/"
(
    cd "$OUT"
    export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
    "$VENV/bin/colcon" build --event-handlers console_direct- \
        --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF > build.log 2>&1 || {
        tail -40 build.log >&2; echo "build_ros_test_msgs: colcon build failed (see $OUT/build.log)" >&2
        exit 1; }
)
# An ament index entry for the upstream arm descriptions, so that xacro's
# $(find interbotix_xsarm_descriptions) resolves with OUT/index on AMENT_PREFIX_PATH.
DESCRIPTIONS=$UPSTREAM/interbotix/interbotix_ros_xsarms/interbotix_xsarm_descriptions
mkdir -p "$OUT/index/share/ament_index/resource_index/packages"
touch "$OUT/index/share/ament_index/resource_index/packages/interbotix_xsarm_descriptions"
ln -sfn "$DESCRIPTIONS" "$OUT/index/share/interbotix_xsarm_descriptions"
echo "$key" > "$OUT/.key"
echo "build_ros_test_msgs: built $OUT in $(( $(date +%s) - start )) s"
