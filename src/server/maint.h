/* maint — the housekeeping thread: retention, tombstone expiry, GC (maint.c). */
#ifndef SS_MAINT_H
#define SS_MAINT_H

#include "server.h"

#define MAINT_INTERVAL_MS 60000 /* longest pause between rounds */
#define MAINT_GC_IDLE_S 3600     /* GC at least this often, even with nothing expired */
#define MAINT_GC_RETRY_S 10      /* again this soon while garbage is kept for a lease */

int maint_start(server *srv);
/* Join it (srv->stopping is set). */
void maint_stop(server *srv);

#endif
