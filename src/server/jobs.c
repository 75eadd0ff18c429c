/* server/jobs.c — what the job services (jobs_local.c, jobs_pool.c) share: picking a model by
 * name, waiting for a job's end, a loaded model's name as clients see it. */
#include "server/jobs.h"

#include "core/common.h"

#include <stdio.h>
#include <string.h>

const char *sdw__served_name(const sdw_image_model *m, char buf[SDW_SERVED_NAME_MAX]) {
    snprintf(buf, SDW_SERVED_NAME_MAX, "%s", m->name);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}


const sdw_served_model *sdw__models_pick(const sdw_model_list *l, const char *name,
                                         sdw_error *err) {
    if (name && *name) {
        for (int i = 0; i < l->n; i++)
            if (!strcmp(l->m[i].name, name)) return &l->m[i];
        char list[1024] = "";
        size_t k = 0;
        for (int i = 0; i < l->n && k + 1 < sizeof list; i++)
            k += (size_t)snprintf(list + k, sizeof list - k, "%s'%s'", i ? ", " : "",
                                  l->m[i].name);
        if (k >= sizeof list) k = sizeof list - 1;
        sdw_error_set(err, SDW_E_NOT_FOUND, "the model '%.200s' is not served here (%s%s)", name,
                      l->n ? "serving " : "no worker is serving any model", list);
        return NULL;
    }
    if (l->n == 1) return &l->m[0];
    if (l->n == 0) {
        sdw_error_set(err, SDW_E_UNAVAILABLE, "no worker is serving any model yet");
        return NULL;
    }
    char list[1024] = "";
    size_t k = 0;
    for (int i = 0; i < l->n && k + 1 < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s'%s'", i ? ", " : "", l->m[i].name);
    sdw_error_set(err, SDW_E_INVALID_ARG,
                  "several models are served (%s): the request must name one in 'model'", list);
    return NULL;
}

sdw_job_state sdw__sjob_wait_done(sdw_sjob *j, const atomic_bool *stopping) {
    sdw_job_status st;
    for (;;) {
        sdw__sjob_status(j, &st);
        if (sdw_job_state_terminal(st.state)) return st.state;
        if (stopping && atomic_load(stopping)) return st.state;
        sdw__sjob_wait(j, st.version, 1.0);
    }
}
