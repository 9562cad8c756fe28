/*
 * store_internal.h — knobs for the store's own tests; not part of the API
 * (nothing outside src/store and tests/unit includes this).
 */
#ifndef SS_STORE_INTERNAL_H
#define SS_STORE_INTERNAL_H

/*
 * Crash points for store_gc: when store_gc_debug_stop_after names a step,
 * store_gc returns 0 right after that step and does nothing more, leaving
 * the data directory exactly as a crash there would (a test then exits the
 * process without closing the store, reopens it and checks).
 */
enum {
	GC_STOP_NONE = 0,
	GC_STOP_AFTER_SWEEP,   /* index rows dropped; no segment touched */
	GC_STOP_AFTER_COPY,    /* a segment's live records copied and fsynced; rows not re-pointed */
	GC_STOP_AFTER_REPOINT, /* rows re-pointed (committed); old file not deleted */
	GC_STOP_AFTER_UNLINK,  /* old file deleted; its row in segments not */
};
extern int store_gc_debug_stop_after;

#endif
