#!/bin/sh
# torchrig dev image start: sshd (keys only, as this non-root user, port 2222) in the
# background, then the command (JupyterLab by default) in the foreground.
# Public keys come from a file mounted at /etc/torchrig/ssh/authorized_keys or from
# TORCHRIG_SSH_AUTHORIZED_KEYS (public keys are not secrets). Host keys are generated
# into $TORCHRIG_SSH_DIR at the first start; mount a volume there to keep them.
set -eu

ssh_dir="${TORCHRIG_SSH_DIR:-$HOME/.torchrig-sshd}"
mkdir -p "$ssh_dir"
chmod 700 "$ssh_dir"
if [ ! -f "$ssh_dir/ssh_host_ed25519_key" ]; then
    ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/ssh_host_ed25519_key"
fi
: > "$ssh_dir/authorized_keys"
if [ -n "${TORCHRIG_SSH_AUTHORIZED_KEYS:-}" ]; then
    printf '%s\n' "$TORCHRIG_SSH_AUTHORIZED_KEYS" > "$ssh_dir/authorized_keys"
fi
chmod 600 "$ssh_dir/authorized_keys"

if [ -s "$ssh_dir/authorized_keys" ] || [ -s /etc/torchrig/ssh/authorized_keys ]; then
    /usr/sbin/sshd -f /etc/torchrig/sshd_config -E "$ssh_dir/sshd.log" \
        -o "HostKey=$ssh_dir/ssh_host_ed25519_key" -o "PidFile=$ssh_dir/sshd.pid" \
        -o "AuthorizedKeysFile=$ssh_dir/authorized_keys /etc/torchrig/ssh/authorized_keys"
    echo "torchrig-dev-start: sshd listening on port 2222 (keys only)" >&2
else
    echo "torchrig-dev-start: no authorized keys (mount /etc/torchrig/ssh/authorized_keys" \
        "or set TORCHRIG_SSH_AUTHORIZED_KEYS); sshd not started" >&2
fi
exec "$@"
