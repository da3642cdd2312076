#!/usr/bin/env bash
# beamops-node-leave-setup: lets chapter 10's autoscaling workers drain and remove themselves
# through this manager without any access to its Docker API (run on every boot by the unit
# beamops-node-leave-setup.service, retried until it succeeds; idempotent).
#
# - The first manager makes the SSH key pair once: the private half into a SecureString it
#   creates (not Terraform: a managed parameter's value would be in Terraform's state) that the
#   workers' instance profile may read (and this manager may only write), the public half into
#   a parameter the other managers read.
# - Every manager publishes its own address and SSH host key (a known_hosts line) in its own
#   parameter whenever it changed, so a replaced manager is found by the workers again.
# - Every manager installs the public half for the user beamops-leave with a forced command:
#   `restrict,command="/usr/local/bin/beamops-node-leave"` (no shell, no pty, no forwarding).
#   That command acts on the calling node only (node-leave.sh).
#
# Settings in $NODE_LEAVE_ENV_FILE (default /etc/beamops/node-leave.env, from the user data).
# The private key exists in a file only for the moment between ssh-keygen and put-parameter, in
# a 0700 directory, and is never on a command line.
set -euo pipefail

NODE_LEAVE_ENV_FILE=${NODE_LEAVE_ENV_FILE:-/etc/beamops/node-leave.env}
if [ -r "$NODE_LEAVE_ENV_FILE" ]; then
  set -a
  # shellcheck source=/dev/null
  . "$NODE_LEAVE_ENV_FILE"
  set +a
fi
: "${NODE_LEAVE_REGION:?the AWS region}"
: "${NODE_LEAVE_KEY_PARAMETER:?the SecureString for the private key}"
: "${NODE_LEAVE_PUBLIC_KEY_PARAMETER:?the parameter for the public key}"
: "${NODE_LEAVE_KNOWN_HOSTS_PARAMETER:?the parameter for the address and host key of this manager}"
NODE_LEAVE_FIRST=${NODE_LEAVE_FIRST:-false}
NODE_LEAVE_USER=${NODE_LEAVE_USER:-beamops-leave}
NODE_LEAVE_COMMAND=${NODE_LEAVE_COMMAND:-/usr/local/bin/beamops-node-leave}
NODE_LEAVE_HOST_KEY=${NODE_LEAVE_HOST_KEY:-/etc/ssh/ssh_host_ed25519_key.pub}
NODE_LEAVE_WAIT=${NODE_LEAVE_WAIT:-600}
IMDS=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}
IMDS=${IMDS%/}

log() { printf 'beamops-node-leave-setup: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
awscli() { aws --region "$NODE_LEAVE_REGION" "$@"; }
get() { awscli ssm get-parameter --name "$1" --with-decryption --query Parameter.Value --output text; }
put() {
  awscli ssm put-parameter --name "$1" --type SecureString --overwrite --value "$2" >/dev/null
}
# Creates the parameter $1 from the file $2 (`file://`: the AWS CLI reads the value from the
# file, so it is in no argv), never overwriting one that exists.
create() {
  local err
  if err=$(awscli ssm put-parameter --name "$1" --type SecureString --value "file://$2" 2>&1 >/dev/null); then
    return 0
  fi
  case "$err" in
  *ParameterAlreadyExists*) return 2 ;;
  *)
    log "$err"
    return 1
    ;;
  esac
}

imds() {
  local token
  token=$(curl -fsS --max-time 5 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
    "$IMDS/latest/api/token") || return 1
  curl -fsS --max-time 5 -H @- "$IMDS/latest/meta-data/$1" <<<"X-aws-ec2-metadata-token: $token"
}

[ -x "$NODE_LEAVE_COMMAND" ] || die "$NODE_LEAVE_COMMAND is not installed"
if ! id "$NODE_LEAVE_USER" >/dev/null 2>&1; then
  # A login shell is needed: sshd runs the forced command through it. The docker group lets
  # the forced command reach the local Engine; the key can run nothing else.
  useradd --system --create-home --shell /bin/sh --groups docker "$NODE_LEAVE_USER"
  log "user $NODE_LEAVE_USER created"
fi
# No password ever, but not `!`-locked: sshd without PAM refuses keys of locked accounts.
usermod -p '*' "$NODE_LEAVE_USER"

if [ "$NODE_LEAVE_FIRST" = true ] && [ "$(get "$NODE_LEAVE_PUBLIC_KEY_PARAMETER")" = pending ]; then
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  ssh-keygen -q -t ed25519 -N '' -C beamops-node-leave -f "$dir/key"
  status=0
  create "$NODE_LEAVE_KEY_PARAMETER" "$dir/key" || status=$?
  if [ "$status" = 2 ]; then
    # A key without its public half: an earlier run stopped between the two writes, so no
    # manager installed it and no worker can use it. Replace it.
    log "$NODE_LEAVE_KEY_PARAMETER exists without a public key; replacing it"
    put "$NODE_LEAVE_KEY_PARAMETER" "file://$dir/key"
  elif [ "$status" != 0 ]; then
    die "cannot create $NODE_LEAVE_KEY_PARAMETER"
  fi
  rm -f "$dir/key"
  # Written last: a manager that finds it installs a key the workers can read.
  put "$NODE_LEAVE_PUBLIC_KEY_PARAMETER" "$(cat "$dir/key.pub")"
  log "key pair made"
fi

# This manager's own known_hosts line, on every run: a replaced or readdressed manager
# publishes its new address and host key; an unchanged one writes nothing.
address=$(imds local-ipv4) || die "no private address from $IMDS"
[ -r "$NODE_LEAVE_HOST_KEY" ] || die "no SSH host key $NODE_LEAVE_HOST_KEY"
read -r kind key _ <"$NODE_LEAVE_HOST_KEY"
line="$address $kind $key"
if [ "$(get "$NODE_LEAVE_KNOWN_HOSTS_PARAMETER")" != "$line" ]; then
  put "$NODE_LEAVE_KNOWN_HOSTS_PARAMETER" "$line"
  log "this manager ($address) published its host key in $NODE_LEAVE_KNOWN_HOSTS_PARAMETER"
fi

deadline=$(($(date +%s) + NODE_LEAVE_WAIT))
until public=$(get "$NODE_LEAVE_PUBLIC_KEY_PARAMETER") && [ "$public" != pending ]; do
  [ "$(date +%s)" -lt "$deadline" ] || die "$NODE_LEAVE_PUBLIC_KEY_PARAMETER still pending"
  sleep 5
done
read -r kind key _ <<<"$public"
if [ "$kind" != ssh-ed25519 ] || ! [[ "$key" =~ ^[A-Za-z0-9+/=]+$ ]]; then
  die "$NODE_LEAVE_PUBLIC_KEY_PARAMETER holds no ed25519 public key"
fi

# authorized_keys belongs to root, so the user cannot lift its own restriction.
home=$(getent passwd "$NODE_LEAVE_USER" | cut -d: -f6)
install -d -o root -g root -m 0755 "$home/.ssh"
printf 'restrict,command="%s" %s %s beamops-node-leave\n' "$NODE_LEAVE_COMMAND" "$kind" "$key" \
  >"$home/.ssh/authorized_keys.tmp"
chmod 0644 "$home/.ssh/authorized_keys.tmp"
mv "$home/.ssh/authorized_keys.tmp" "$home/.ssh/authorized_keys"
log "workers may run $NODE_LEAVE_COMMAND as $NODE_LEAVE_USER, nothing else"
