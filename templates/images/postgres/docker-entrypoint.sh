#!/bin/sh
# The PostgreSQL image's entrypoint, written by beamops for images it builds from Debian.
# It keeps the official image's contract: on first start initdb into $PGDATA with
# POSTGRES_USER / POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE, a Docker secret) / POSTGRES_DB,
# password (scram-sha-256) logins over the network, *.sh and *.sql files from
# /docker-entrypoint-initdb.d run once, then `exec postgres` listening on all addresses.
set -eu

# VAR_FILE names a file (a Docker secret) holding VAR; both at once is a mistake.
file_env() {
	var="$1"
	file_var="${var}_FILE"
	eval "value=\${$var:-}"
	eval "file=\${$file_var:-}"
	if [ -n "$value" ] && [ -n "$file" ]; then
		echo "error: both $var and $file_var are set (but are exclusive)" >&2
		exit 1
	fi
	if [ -n "$file" ]; then
		if [ ! -r "$file" ]; then
			echo "error: $file_var=$file is not readable" >&2
			exit 1
		fi
		value="$(cat "$file")"
	fi
	export "$var=$value"
	unset "$file_var"
}

# `docker run IMAGE -c shared_buffers=256MB` means postgres with those options.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	set -- postgres "$@"
fi

# Like the official image: start as root so secrets from files any user may own (compose
# bind-mounts them with the host's owner and mode) can be read, prepare PGDATA, then drop to
# the postgres user for everything else.
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER
	file_env POSTGRES_DB
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER
	file_env POSTGRES_DB
	: "${POSTGRES_USER:=postgres}"
	: "${POSTGRES_DB:=$POSTGRES_USER}"
	if [ -z "$POSTGRES_PASSWORD" ]; then
		echo "error: the database is uninitialized and no superuser password is set" >&2
		echo "  fix: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (a Docker secret)" >&2
		exit 1
	fi

	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA"
	pwfile="$(mktemp)"
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	# Local socket logins stay trusted (the container's own tools); TCP, even from
	# 127.0.0.1, needs the password.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options by design
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
	rm -f "$pwfile"
	printf '\n# beamops: logins from the network with a password\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	printf "\n# beamops: listen on every address of the container\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# A server on the socket only, so nobody connects before setup is done.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
	if [ "$POSTGRES_DB" != postgres ]; then
		psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
			--set db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db";
		SQL
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			echo "running $f"
			# shellcheck source=/dev/null
			. "$f"
			;;
		*.sql)
			echo "running $f"
			psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f"
			;;
		*) ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
