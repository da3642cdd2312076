#!/usr/bin/env bash
# beamops-node-leave: the one command an autoscaling worker's SSH key may run on a manager
# (chapter 10). authorized_keys forces it on every login with that key
# (`restrict,command="/usr/local/bin/beamops-node-leave"`): no shell, no pty, no forwarding,
# so no Docker API either. It acts on the calling node only: the node named in the request must
# be a worker whose address, as the swarm sees it, is the SSH client's address.
#
#   label  NODE-ID INSTANCE-ID GROUP  label the node (beamops.instance-id, beamops.asg,
#                                     beamops.pool=worker)
#   ready  NODE-ID                    label it beamops.ready=true
#   drain  NODE-ID SECONDS            set it to drain and wait (at most SECONDS) until no task
#                                     should run on it and every replicated service that had a
#                                     task there runs all its replicas again
#   remove NODE-ID SECONDS            wait (at most SECONDS) until the node is down, remove it
#
# Exit 77 when a request is refused: nothing was changed. SECONDS is at most NODE_LEAVE_MAX_WAIT
# from the managers module's node-leave.env (the workers' lifecycle hook timeout), else 7200 (the
# longest a lifecycle hook holds an instance): a node cannot keep a manager's process waiting
# longer than its own termination may take.
set -euo pipefail

max_wait=$(sed -n 's/^NODE_LEAVE_MAX_WAIT=\([0-9]\{1,4\}\)$/\1/p' /etc/beamops/node-leave.env 2>/dev/null | tail -n 1 || true)
max_wait=${max_wait:-7200}

log() { printf 'beamops-node-leave: %s\n' "$*" >&2; }
refuse() {
  log "refused: $*"
  exit 77
}
now() { date +%s; }

# sshd sets SSH_CLIENT from the TCP connection ("address port localport"): the node cannot
# choose it. The request comes in SSH_ORIGINAL_COMMAND, split on blanks only.
caller=${SSH_CLIENT%% *}
[ -n "$caller" ] || refuse "no SSH client address"
read -r -a request <<<"${SSH_ORIGINAL_COMMAND:-}"
verb=${request[0]:-}
id=${request[1]:-}
[[ "$verb" =~ ^(label|ready|drain|remove)$ ]] || refuse "unknown request \`${SSH_ORIGINAL_COMMAND:-}\`"
[[ "$id" =~ ^[a-z0-9]{25}$ ]] || refuse "\`$id\` is no swarm node id"

seconds() {
  [[ "${1:-}" =~ ^[0-9]{1,4}$ ]] || refuse "\`${1:-}\` is no number of seconds"
  [ "$((10#$1))" -le "$max_wait" ] || refuse "$1 s is longer than the hook timeout ($max_wait s)"
  printf '%s' "$((10#$1))"
}

node_field() {
  # shellcheck disable=SC2016 # a Go template, not a shell expansion
  docker node inspect "$id" --format "$1"
}

info=$(node_field '{{.Status.Addr}} {{.Spec.Role}}' 2>/dev/null) || refuse "no node $id in the swarm"
read -r addr role <<<"$info"
[ "$addr" = "$caller" ] || refuse "node $id is not the calling node ($caller)"
[ "$role" = worker ] || refuse "node $id is a $role, not a worker"

# Services with a task meant to run on the node, one per line.
services_on() {
  docker node ps "$id" --filter desired-state=running --format '{{.Name}}' |
    sed 's/\.[^.]*$//' | sort -u
}

# True when no task should run on the node and every replicated service in $1 runs all its
# replicas.
moved() {
  local svc replicas
  [ -z "$(docker node ps "$id" --filter desired-state=running -q)" ] || return 1
  for svc in $1; do
    replicas=$(docker service ls --filter "name=$svc" --format '{{.Name}} {{.Mode}} {{.Replicas}}' |
      awk -v s="$svc" '$1 == s { print $2, $3 }')
    case "$replicas" in
    replicated\ *)
      replicas=${replicas#replicated }
      replicas=${replicas%% *}
      [ "${replicas%/*}" = "${replicas#*/}" ] || return 1
      ;;
    esac
  done
}

case "$verb" in
label)
  iid=${request[2]:-}
  group=${request[3]:-}
  [[ "$iid" =~ ^i-[0-9a-f]{8,17}$ ]] || refuse "\`$iid\` is no instance id"
  [[ "$group" =~ ^[A-Za-z0-9_.-]{1,255}$ ]] || refuse "\`$group\` is no group name"
  docker node update --label-add "beamops.instance-id=$iid" --label-add "beamops.asg=$group" \
    --label-add beamops.pool=worker "$id" >/dev/null
  log "node $id labelled ($iid, $group)"
  ;;
ready)
  docker node update --label-add beamops.ready=true "$id" >/dev/null
  log "node $id labelled ready"
  ;;
drain)
  # Its own assignment: a refusal inside $((…)) would exit 1, not 77.
  limit=$(seconds "${request[2]:-}")
  deadline=$(($(now) + limit))
  services=$(services_on)
  if [ "$(node_field '{{.Spec.Availability}}')" != drain ]; then
    docker node update --availability drain "$id" >/dev/null
    log "node $id set to drain"
  fi
  until moved "$services"; do
    if [ "$(now)" -ge "$deadline" ]; then
      log "tasks of node $id still moving when the time ran out"
      exit 75
    fi
    sleep 1
  done
  log "no task runs on $id; services moved: $(echo "$services" | tr '\n' ' ')"
  ;;
remove)
  # Its own assignment: a refusal inside $((…)) would exit 1, not 77.
  limit=$(seconds "${request[2]:-}")
  deadline=$(($(now) + limit))
  # Leaving the swarm shows as `down` within seconds; past the deadline it goes regardless.
  until [ "$(node_field '{{.Status.State}}')" = down ] || [ "$(now)" -ge "$deadline" ]; do
    sleep 1
  done
  docker node rm --force "$id" >/dev/null
  log "node $id removed from the swarm"
  ;;
esac
