#!/bin/sh
# Run once by the official postgres image when it initialises its data
# directory (/docker-entrypoint-initdb.d/): the server started afterwards
# reads Aurum's settings (mounted at /etc/postgresql/aurum.conf) on top of
# the image's own postgresql.conf.
set -eu
echo "include '/etc/postgresql/aurum.conf'" >> "$PGDATA/postgresql.conf"
