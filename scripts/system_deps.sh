#!/usr/bin/env bash
# Debian packages the project needs: Mesa EGL for headless MuJoCo rendering; openssl
# for the Spot stand-in's test certificate; cmake and a C/C++ compiler to build the ROS
# message packages the Interbotix tests need (scripts/build_ros_test_msgs.sh).
# Installs only what is missing; uses sudo when not root; skips quietly off Debian/Ubuntu.
set -euo pipefail
pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri openssl cmake gcc g++ make)
command -v dpkg-query >/dev/null || { echo "system_deps: not Debian/Ubuntu, skipping"; exit 0; }
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "system_deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
