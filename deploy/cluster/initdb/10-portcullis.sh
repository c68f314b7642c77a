#!/bin/bash
# Run by the postgres image once, as the database's owner, when its data directory is new: the daemons' role (its
# password from the compose secret), the fleet's database, and the schema with the role's grants. The same steps by
# hand: docs/cluster.md.
set -euo pipefail
password=$(head -n 1 /run/secrets/portcullis_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=password="$password" <<'SQL'
CREATE ROLE portcullis LOGIN PASSWORD :'password';
CREATE DATABASE fleet;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname fleet -f /docker-entrypoint-initdb.d/schema.sql.in
