#!/bin/sh
# Makes systemd see the unit; the operator enables it once the config is
# set (systemctl enable --now sgnode).
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
