#ifndef PORTCULLIS_CPOSTGRES_SHIM_H
#define PORTCULLIS_CPOSTGRES_SHIM_H

// PostgreSQL's client library (Debian: libpq-dev), for the fleet's shared bans.
#include <libpq-fe.h>

#endif
