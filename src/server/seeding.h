/* seeding — a server started with --tracker seeds all it holds (seeding.c). */
#ifndef SS_SEEDING_H
#define SS_SEEDING_H

#include "server.h"
#include "../net/trackers.h"

/* Start the thread if --tracker was given (srv->stopping ends it). */
int seeding_start(server *srv);
void seeding_stop(server *srv);

#endif
