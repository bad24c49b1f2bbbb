#!/bin/sh
# torchrig dev image start: sshd (keys only, as this non-root user, port 2222) in the
# background, then the command (JupyterLab by default) in the foreground.
# Public keys come from a file mounted at /etc/torchrig/ssh/authorized_keys (any owner or
# mode: it is copied, so sshd's StrictModes never sees a host UID) and/or from
# TORCHRIG_SSH_AUTHORIZED_KEYS (public keys are not secrets). Host keys are generated
# into $TORCHRIG_SSH_DIR at the first start; mount a volume there to keep them.
# SSH sessions get the container's environment (the venv on PATH, CUDA and TORCHRIG_*
# variables, whatever `docker run -e` or the pod set), written at start to
# ~/.ssh/environment, which sshd reads for this user (PermitUserEnvironment).
set -eu

ssh_dir="${TORCHRIG_SSH_DIR:-$HOME/.torchrig-sshd}"
mkdir -p "$ssh_dir" "$HOME/.ssh"
chmod 700 "$ssh_dir" "$HOME/.ssh"
if [ ! -f "$ssh_dir/ssh_host_ed25519_key" ]; then
    ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/ssh_host_ed25519_key"
fi
keys="$ssh_dir/authorized_keys"
: > "$keys"
chmod 600 "$keys"
if [ -r /etc/torchrig/ssh/authorized_keys ]; then
    cat /etc/torchrig/ssh/authorized_keys >> "$keys"
    printf '\n' >> "$keys"
fi
if [ -n "${TORCHRIG_SSH_AUTHORIZED_KEYS:-}" ]; then
    printf '%s\n' "$TORCHRIG_SSH_AUTHORIZED_KEYS" >> "$keys"
fi

# the container's environment for SSH sessions: one NAME=value per line, leaving out what
# sshd sets itself and values that span lines (the file has no quoting)
env_file="$HOME/.ssh/environment"
: > "$env_file"
chmod 600 "$env_file"
python3 - "$env_file" <<'PY'
import os, sys
skip = {"HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "TERM", "MAIL", "_",
        "HOSTNAME", "TORCHRIG_SSH_AUTHORIZED_KEYS", "JUPYTER_TOKEN"}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    for name, value in sorted(os.environ.items()):
        if name not in skip and "\n" not in value and "=" not in name:
            out.write(f"{name}={value}\n")
PY

if grep -q '[^[:space:]]' "$keys"; then
    /usr/sbin/sshd -f /etc/torchrig/sshd_config -E "$ssh_dir/sshd.log" \
        -o "HostKey=$ssh_dir/ssh_host_ed25519_key" -o "PidFile=$ssh_dir/sshd.pid" \
        -o "AuthorizedKeysFile=$keys"
    echo "torchrig-dev-start: sshd listening on port 2222 (keys only)" >&2
else
    echo "torchrig-dev-start: no authorized keys (mount /etc/torchrig/ssh/authorized_keys" \
        "or set TORCHRIG_SSH_AUTHORIZED_KEYS); sshd not started" >&2
fi
exec "$@"
