/* nn/stop.c — the calling thread's stop reference (see stop.h). */
#include "nn/stop.h"

/* Thread-local by design: see stop.h. */
static _Thread_local sdw_stop_ref t_ref;

sdw_stop_ref sdw_stop_attach(sdw_stop_ref r) {
    sdw_stop_ref prev = t_ref;
    t_ref = r;
    return prev;
}

sdw_stop_ref sdw_stop_current(void) { return t_ref; }
