/* pool/protocol.c — see protocol.h. The scripts are short on purpose: each is one state change,
 * its keys in KEYS, its values in ARGV. Times come from Redis (TIME), so the machines' clocks
 * never have to agree. Floats leave a script as strings: Redis would truncate Lua numbers to
 * integers. */
#include "pool/protocol.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

/* Helpers every script starts with. */
#define LUA_PRELUDE                                                                                \
    "local function now() local t = redis.call('TIME') "                                          \
    "return tonumber(t[1]) + tonumber(t[2]) / 1e6 end\n"                                          \
    "local function terminal(s) return s == 'succeeded' or s == 'failed' or "                      \
    "s == 'cancelled' end\n"                                                                       \
    "local function event(key, v, f) local a = {'XADD', key, 'MAXLEN', '~', "                     \
    STR(SDW_POOL_EVENTS_MAX) ", '*', 'v', v} for i = 1, #f do a[#a + 1] = f[i] end "              \
    "redis.call(unpack(a)) end\n"

/* KEYS: queue, waiting, job, events, seq. ARGV: job, req, n, total, queue_max, ttl, model,
 * has_init, init, has_mask, mask, n_controls, control0, control1, ... */
static const char k_enqueue[] = LUA_PRELUDE
    /* the same job again (a retry after a lost reply): already queued */
    "if redis.call('EXISTS', KEYS[3]) == 1 then return {'ok', "
    "redis.call('HGET', KEYS[3], 'entry')} end\n"
    "local qmax = tonumber(ARGV[5])\n"
    "if qmax > 0 then local w = redis.call('ZCARD', KEYS[2]) "
    "if w >= qmax then return {'busy', w} end end\n"
    "redis.pcall('XGROUP', 'CREATE', KEYS[1], '" SDW_POOL_GROUP "', '0', 'MKSTREAM')\n"
    "local f = {'XADD', KEYS[1], '*', 'job', ARGV[1], 'req', ARGV[2]}\n"
    "if ARGV[8] == '1' then f[#f + 1] = 'init' f[#f + 1] = ARGV[9] end\n"
    "if ARGV[10] == '1' then f[#f + 1] = 'mask' f[#f + 1] = ARGV[11] end\n"
    "for i = 1, tonumber(ARGV[12]) do f[#f + 1] = 'control' .. (i - 1) "
    "f[#f + 1] = ARGV[12 + i] end\n"
    "local eid = redis.call(unpack(f))\n"
    "local seq = redis.call('INCR', KEYS[5])\n"
    "redis.call('ZADD', KEYS[2], seq, ARGV[1])\n"
    "redis.call('HSET', KEYS[3], 'model', ARGV[7], 'state', 'queued', 'version', 1, 'created', "
    "tostring(now()), 'n', ARGV[3], 'step', 0, 'total', ARGV[4], 'n_done', 0, 'entry', eid, "
    "'seq', seq, 'req', ARGV[2], 'deliveries', 0, 'preview_seq', 0)\n"
    "redis.call('EXPIRE', KEYS[3], ARGV[6])\n"
    "event(KEYS[4], 1, {'state', 'queued', 'step', 0, 'total', ARGV[4], 'n_done', 0})\n"
    "redis.call('EXPIRE', KEYS[4], ARGV[6])\n"
    "return {'ok', eid}\n";

/* KEYS: job, events, queue, waiting. ARGV: job, mode, ttl. */
static const char k_cancel[] = LUA_PRELUDE
    "local h = redis.call('HMGET', KEYS[1], 'state', 'entry', 'stop', 'step', 'total', "
    "'n_done')\n"
    "if not h[1] then return {'unknown'} end\n"
    "if terminal(h[1]) then return {'ended'} end\n"
    "local mode = ARGV[2]\n"
    "if h[1] == 'queued' then\n"
    "  if mode ~= 'cancel' then return {'not_running'} end\n"
    "  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', 'cancelled before it started', "
    "'finished', tostring(now()), 'cancel_requested', 1)\n"
    "  local v = redis.call('HINCRBY', KEYS[1], 'version', 1)\n"
    "  event(KEYS[2], v, {'state', 'cancelled', 'step', h[4], 'total', h[5], 'n_done', h[6]})\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[3]) redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
    "  redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "  if h[2] then redis.call('XACK', KEYS[3], '" SDW_POOL_GROUP "', h[2]) "
    "redis.call('XDEL', KEYS[3], h[2]) end\n"
    "  return {'done'}\n"
    "end\n"
    /* running: a cancel wins over an interrupt, both over a skip */
    "local s = h[3]\n"
    "if mode == 'cancel' or (mode == 'interrupt' and s ~= 'cancel') or "
    "(mode == 'skip' and not s) then\n"
    "  redis.call('HSET', KEYS[1], 'stop', mode)\n"
    "  if mode ~= 'skip' then redis.call('HSET', KEYS[1], 'cancel_requested', 1) end\n"
    "  local v = redis.call('HINCRBY', KEYS[1], 'version', 1)\n"
    "  event(KEYS[2], v, {'state', 'running', 'step', h[4], 'total', h[5], 'n_done', h[6], "
    "'stop', mode})\n"
    "end\n"
    "return {'requested'}\n";

/* KEYS: job, events. ARGV: job, prefix. */
static const char k_read[] =
    "local h = redis.call('HMGET', KEYS[1], 'model', 'state', 'version', 'preview_seq', 'n', "
    "'n_done', 'step', 'total', 'deliveries', 'created', 'started', 'finished', "
    "'cancel_requested', 'interrupted', 'worker', 'error', 'req')\n"
    "if not h[2] then return {} end\n"
    "local t = redis.call('TIME')\n"
    "local pos = -1\n"
    "if h[2] == 'queued' then local r = redis.call('ZRANK', ARGV[2] .. ':waiting:' .. h[1], "
    "ARGV[1]) if r then pos = r end end\n"
    "local mean = redis.call('HGET', ARGV[2] .. ':model:' .. h[1], 'mean_s') or '0'\n"
    "local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "local lid = '0-0' if last[1] then lid = last[1][1] end\n"
    "return {h, t[1] .. '.' .. string.format('%06d', tonumber(t[2])), pos, mean, lid}\n";

/* KEYS: job, events, queue, waiting. ARGV: job, worker, entry, max_deliveries, ttl. */
static const char k_start[] = LUA_PRELUDE
    "local function ack() redis.call('XACK', KEYS[3], '" SDW_POOL_GROUP "', ARGV[3]) "
    "redis.call('XDEL', KEYS[3], ARGV[3]) redis.call('ZREM', KEYS[4], ARGV[1]) end\n"
    "local h = redis.call('HMGET', KEYS[1], 'state', 'stop', 'total')\n"
    "if not h[1] or terminal(h[1]) then ack() return {'skipped', 0, ''} end\n"
    "local p = redis.call('XPENDING', KEYS[3], '" SDW_POOL_GROUP "', ARGV[3], ARGV[3], 1)\n"
    "local d = 1 if p[1] then d = tonumber(p[1][4]) end\n"
    "redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "local t = tostring(now())\n"
    "if d > tonumber(ARGV[4]) then\n"
    "  local msg = 'failed after ' .. (d - 1) .. ' deliveries: every worker that took this job "
    "stopped before finishing it (crashed, killed or cut off from Redis), so it is not tried "
    "again'\n"
    "  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', msg, 'finished', t, "
    "'deliveries', d - 1)\n"
    "  redis.call('HDEL', KEYS[1], 'preview', 'stop')\n"
    "  local v = redis.call('HINCRBY', KEYS[1], 'version', 1)\n"
    "  event(KEYS[2], v, {'state', 'failed', 'step', 0, 'total', h[3], 'n_done', 0})\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[5]) redis.call('EXPIRE', KEYS[2], ARGV[5])\n"
    "  ack()\n"
    "  return {'failed', d, ''}\n"
    "end\n"
    "local stop = h[2] or ''\n"
    "if stop == 'skip' then stop = '' redis.call('HDEL', KEYS[1], 'stop') end\n"
    "redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'deliveries', d, "
    "'started', t, 'step', 0, 'n_done', 0)\n"
    "redis.call('HDEL', KEYS[1], 'preview')\n"
    "local v = redis.call('HINCRBY', KEYS[1], 'version', 1)\n"
    "event(KEYS[2], v, {'state', 'running', 'step', 0, 'total', h[3], 'n_done', 0})\n"
    "return {'run', d, stop}\n";

/* KEYS: job, events, queue. ARGV: job, worker, entry, changed, step, total, n_done,
 * preview_seq, has_preview, preview. */
static const char k_progress[] = LUA_PRELUDE
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'stop', ''} end\n"
    "local h = redis.call('HMGET', KEYS[1], 'state', 'worker', 'stop')\n"
    "if h[1] ~= 'running' then return {'stop', ''} end\n"
    "if h[2] ~= ARGV[2] then return {'lost', ''} end\n"
    "if ARGV[4] == '1' then\n"
    "  redis.call('HSET', KEYS[1], 'step', ARGV[5], 'total', ARGV[6], 'n_done', ARGV[7])\n"
    "  local f = {'state', 'running', 'step', ARGV[5], 'total', ARGV[6], 'n_done', ARGV[7]}\n"
    "  if ARGV[9] == '1' then\n"
    "    redis.call('HSET', KEYS[1], 'preview', ARGV[10], 'preview_seq', ARGV[8])\n"
    "    f[#f + 1] = 'preview' f[#f + 1] = ARGV[10]\n"
    "  end\n"
    "  event(KEYS[2], redis.call('HINCRBY', KEYS[1], 'version', 1), f)\n"
    "end\n"
    /* the claim: the entry's idle time starts again, so no other worker takes it over */
    "redis.call('XCLAIM', KEYS[3], '" SDW_POOL_GROUP "', ARGV[2], 0, ARGV[3], 'JUSTID')\n"
    "local stop = h[3] or ''\n"
    "if stop == 'skip' then redis.call('HDEL', KEYS[1], 'stop') end\n"
    "return {'run', stop}\n";

/* KEYS: job, events, queue, waiting, model stats. ARGV: job, entry, state, error, interrupted,
 * n_done, ttl, then png, info per image. */
static const char k_finish[] = LUA_PRELUDE
    "local function ack() redis.call('XACK', KEYS[3], '" SDW_POOL_GROUP "', ARGV[2]) "
    "redis.call('XDEL', KEYS[3], ARGV[2]) redis.call('ZREM', KEYS[4], ARGV[1]) end\n"
    "local h = redis.call('HMGET', KEYS[1], 'state', 'started', 'total')\n"
    "if not h[1] or terminal(h[1]) then ack() return {'already'} end\n"
    "local t = now()\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[3], 'error', ARGV[4], 'interrupted', ARGV[5], "
    "'n_done', ARGV[6], 'finished', tostring(t))\n"
    "local n = tonumber(ARGV[6])\n"
    "for i = 0, n - 1 do redis.call('HSET', KEYS[1], 'img:' .. i, ARGV[8 + 2 * i], 'info:' .. i, "
    "ARGV[9 + 2 * i]) end\n"
    "if ARGV[3] == 'succeeded' then redis.call('HSET', KEYS[1], 'step', h[3]) end\n"
    "redis.call('HDEL', KEYS[1], 'preview', 'stop')\n"
    "local st = redis.call('HMGET', KEYS[1], 'step', 'total')\n"
    "event(KEYS[2], redis.call('HINCRBY', KEYS[1], 'version', 1), {'state', ARGV[3], 'step', "
    "st[1], 'total', st[2], 'n_done', ARGV[6]})\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[7]) redis.call('EXPIRE', KEYS[2], ARGV[7])\n"
    "ack()\n"
    "if ARGV[3] == 'succeeded' and h[2] then\n"
    "  local d = t - tonumber(h[2])\n"
    "  local m = tonumber(redis.call('HGET', KEYS[5], 'mean_s') or '0')\n"
    "  if m > 0 then m = 0.8 * m + 0.2 * d else m = d end\n"
    "  redis.call('HSET', KEYS[5], 'mean_s', tostring(m))\n"
    "end\n"
    "return {'stored'}\n";

/* KEYS: job, events, queue, waiting. ARGV: job, worker, entry, idle_ms. */
static const char k_release[] = LUA_PRELUDE
    "local h = redis.call('HMGET', KEYS[1], 'state', 'worker', 'seq', 'deliveries', 'total')\n"
    "if h[1] ~= 'running' or h[2] ~= ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'step', 0, 'n_done', 0)\n"
    "redis.call('HDEL', KEYS[1], 'preview')\n"
    "event(KEYS[2], redis.call('HINCRBY', KEYS[1], 'version', 1), {'state', 'queued', 'step', 0, "
    "'total', h[5], 'n_done', 0})\n"
    "if h[3] then redis.call('ZADD', KEYS[4], h[3], ARGV[1]) end\n"
    "local d = tonumber(h[4] or '1') or 1\n"
    "if d < 1 then d = 1 end\n"
    "redis.call('XCLAIM', KEYS[3], '" SDW_POOL_GROUP "', ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], "
    "'RETRYCOUNT', d - 1, 'JUSTID')\n"
    "return 1\n";

/* KEYS: worker, workers, waiting. ARGV: ttl, id, then field, value pairs. */
static const char k_heartbeat[] = LUA_PRELUDE
    "local t = tostring(now())\n"
    "local f = {'HSET', KEYS[1], 'heartbeat', t, 'queue', redis.call('ZCARD', KEYS[3])}\n"
    "for i = 3, #ARGV do f[#f + 1] = ARGV[i] end\n"
    "if redis.call('HEXISTS', KEYS[1], 'started') == 0 then f[#f + 1] = 'started' "
    "f[#f + 1] = t end\n"
    "redis.call(unpack(f))\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "redis.call('SADD', KEYS[2], ARGV[2])\n"
    "return 1\n";

/* KEYS: workers. ARGV: prefix. */
static const char k_workers[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local h = redis.call('HGETALL', ARGV[1] .. ':worker:' .. id)\n"
    "  if #h == 0 then redis.call('SREM', KEYS[1], id) else out[#out + 1] = h end\n"
    "end\n"
    "return out\n";

/* KEYS: worker, workers, queue. ARGV: worker. */
static const char k_deregister[] =
    "redis.call('DEL', KEYS[1]) redis.call('SREM', KEYS[2], ARGV[1])\n"
    "local p = redis.pcall('XPENDING', KEYS[3], '" SDW_POOL_GROUP "', '-', '+', 1, ARGV[1])\n"
    "if type(p) == 'table' and not p.err and #p == 0 then "
    "redis.pcall('XGROUP', 'DELCONSUMER', KEYS[3], '" SDW_POOL_GROUP "', ARGV[1]) end\n"
    "return 1\n";

/* KEYS: queue. ARGV: idle_ms. Atomic, so a consumer cannot take an entry between the check and
 * the deletion (which would drop the entry from the pending list). */
static const char k_prune[] =
    "local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], '" SDW_POOL_GROUP "')\n"
    "if type(cs) ~= 'table' or cs.err then return 0 end\n"
    "local n = 0\n"
    "for _, c in ipairs(cs) do\n"
    "  local f = {} for i = 1, #c, 2 do f[c[i]] = c[i + 1] end\n"
    "  if f.pending == 0 and f.idle > tonumber(ARGV[1]) then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], '" SDW_POOL_GROUP "', f.name) n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/* ---- small helpers ---- */

sdw_status sdw_pool_check_name(const char *what, const char *name, sdw_error *err) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= SDW_POOL_NAME_MAX)
        return sdw_error_set(err, SDW_E_INVALID_ARG, "%s must be 1-%d bytes long", what,
                             SDW_POOL_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] <= ' ' || name[i] == 0x7f)
            return sdw_error_set(err, SDW_E_INVALID_ARG, "%s '%.*s' holds a space or a control "
                                 "character", what, (int)SDW_MIN(n, 64), name);
    return SDW_OK;
}

const char *sdw_pool_key(char *buf, size_t cap, const char *prefix, const char *part1,
                         const char *part2) {
    snprintf(buf, cap, "%s:%s%s%s", prefix, part1, part2 ? ":" : "", part2 ? part2 : "");
    return buf;
}

const char *sdw_pool_state_str(sdw_job_state s) { return sdw_job_state_str(s); }

bool sdw_pool_state_parse(const char *s, sdw_job_state *out) {
    for (int i = SDW_JOB_QUEUED; i <= SDW_JOB_CANCELLED; i++)
        if (s && !strcmp(s, sdw_job_state_str((sdw_job_state)i))) {
            *out = (sdw_job_state)i;
            return true;
        }
    return false;
}

/* Runs script with its keys (n_keys first in a) and arguments. */
static sdw_status eval(sdw_redis *c, const char *script, sdw_redis_args *a, int n_keys,
                       redisReply **reply, sdw_error *err) {
    /* EVAL script numkeys ...: the two go in front of what the caller built */
    sdw_redis_args full = {0};
    sdw_redis_args_str(&full, "EVAL");
    sdw_redis_args_str(&full, script);
    sdw_redis_args_int(&full, n_keys);
    for (int i = 0; i < a->n; i++) sdw_redis_args_bin(&full, a->v[i], a->len[i]);
    sdw_status s = sdw_redis_exec(c, &full, 0, reply, err);
    sdw_redis_args_free(&full);
    return s;
}

static void key(sdw_redis_args *a, const char *prefix, const char *p1, const char *p2) {
    char buf[512];
    sdw_redis_args_str(a, sdw_pool_key(buf, sizeof buf, prefix, p1, p2));
}

static void job_key(sdw_redis_args *a, const char *prefix, const char *job, bool events) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s:job:%s%s", prefix, job, events ? ":events" : "");
    sdw_redis_args_str(a, buf);
}

/* The first element of a script's reply as a verdict word; "" when there is none. */
static const char *word(const redisReply *r) {
    const char *s = sdw_redis_reply_str(sdw_redis_reply_at(r, 0));
    return s ? s : "";
}

static sdw_status bad_reply(sdw_error *err, const char *what) {
    return sdw_error_set(err, SDW_E_BACKEND, "unexpected reply from Redis to %s", what);
}

static long ttl_arg(double s) { return (long)SDW_MAX(1.0, ceil(s)); }

/* ---- the gateway's side ---- */

sdw_status sdw_pool_enqueue(sdw_redis *c, const char *prefix, const sdw_pool_enqueue_in *in,
                            sdw_error *err) {
    sdw_redis_args a = {0};
    key(&a, prefix, "queue", in->model);
    key(&a, prefix, "waiting", in->model);
    job_key(&a, prefix, in->job_id, false);
    job_key(&a, prefix, in->job_id, true);
    key(&a, prefix, "seq", NULL);
    sdw_redis_args_str(&a, in->job_id);
    sdw_redis_args_str(&a, in->req_json);
    sdw_redis_args_int(&a, in->n_images);
    sdw_redis_args_int(&a, in->total_steps);
    sdw_redis_args_int(&a, in->queue_max);
    sdw_redis_args_int(&a, ttl_arg(in->job_ttl_s));
    sdw_redis_args_str(&a, in->model);
    const sdw_image *img[2] = {in->init, in->mask};
    for (int i = 0; i < 2; i++) {
        sdw_redis_args_str(&a, img[i] ? "1" : "0");
        if (img[i]) sdw_redis_args_bin(&a, img[i]->data, (size_t)img[i]->width * img[i]->height *
                                                             img[i]->channels);
        else sdw_redis_args_str(&a, "");
    }
    SDW_ASSERT(in->n_controls >= 0 && in->n_controls <= SDW_MAX_CONTROLS);
    sdw_redis_args_int(&a, in->n_controls);
    for (int i = 0; i < in->n_controls; i++)
        sdw_redis_args_bin(&a, in->control[i]->data, (size_t)in->control[i]->width *
                                                         in->control[i]->height *
                                                         in->control[i]->channels);
    redisReply *r = NULL;
    sdw_status s = eval(c, k_enqueue, &a, 5, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    long long waiting = 0;
    if (!strcmp(word(r), "busy")) {
        sdw_redis_reply_ll(sdw_redis_reply_at(r, 1), &waiting);
        s = sdw_error_set(err, SDW_E_BUSY, "the queue of model %s is full (%lld jobs waiting); "
                          "try again later", in->model, waiting);
    } else if (strcmp(word(r), "ok")) {
        s = bad_reply(err, "a job's submission");
    }
    freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_cancel(sdw_redis *c, const char *prefix, const char *job_id,
                           sdw_pool_cancel_mode mode, double result_ttl_s,
                           sdw_pool_cancel_result *out, sdw_error *err) {
    /* The queue and waiting keys depend on the job's model: read it first (a job never changes
     * model, so the two steps cannot disagree). */
    sdw_redis_args a = {0};
    job_key(&a, prefix, job_id, false);
    sdw_redis_args args = {0};
    sdw_redis_args_str(&args, "HGET");
    job_key(&args, prefix, job_id, false);
    sdw_redis_args_str(&args, "model");
    redisReply *r = NULL;
    sdw_status s = sdw_redis_exec(c, &args, 0, &r, err);
    sdw_redis_args_free(&args);
    if (s) {
        sdw_redis_args_free(&a);
        return s;
    }
    const char *model = sdw_redis_reply_str(r);
    if (!model) {
        freeReplyObject(r);
        sdw_redis_args_free(&a);
        *out = SDW_POOL_CANCEL_UNKNOWN;
        return SDW_OK;
    }
    job_key(&a, prefix, job_id, true);
    key(&a, prefix, "queue", model);
    key(&a, prefix, "waiting", model);
    freeReplyObject(r);
    static const char *const modes[] = {"cancel", "interrupt", "skip"};
    sdw_redis_args_str(&a, job_id);
    sdw_redis_args_str(&a, modes[mode]);
    sdw_redis_args_int(&a, ttl_arg(result_ttl_s));
    s = eval(c, k_cancel, &a, 4, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    const char *w = word(r);
    if (!strcmp(w, "done")) *out = SDW_POOL_CANCEL_DONE;
    else if (!strcmp(w, "requested")) *out = SDW_POOL_CANCEL_REQUESTED;
    else if (!strcmp(w, "not_running")) *out = SDW_POOL_CANCEL_NOT_RUNNING;
    else if (!strcmp(w, "ended")) *out = SDW_POOL_CANCEL_ENDED;
    else if (!strcmp(w, "unknown")) *out = SDW_POOL_CANCEL_UNKNOWN;
    else s = bad_reply(err, "a cancel");
    freeReplyObject(r);
    return s;
}

/* Reads a number from a reply element (0 when absent or not a number). */
static double num_at(const redisReply *r) {
    const char *s = sdw_redis_reply_str(r);
    if (!s) {
        long long v;
        return sdw_redis_reply_ll(r, &v) ? (double)v : 0;
    }
    char *end;
    double v = strtod(s, &end);
    return *end || !isfinite(v) ? 0 : v;
}

static void copy_str(char *dst, size_t cap, const redisReply *r) {
    const char *s = sdw_redis_reply_str(r);
    snprintf(dst, cap, "%s", s ? s : "");
}

sdw_status sdw_pool_job_read(sdw_redis *c, const char *prefix, const char *job_id,
                             sdw_pool_job_fields *out, sdw_error *err) {
    sdw_redis_args a = {0};
    job_key(&a, prefix, job_id, false);
    job_key(&a, prefix, job_id, true);
    sdw_redis_args_str(&a, job_id);
    sdw_redis_args_str(&a, prefix);
    redisReply *r = NULL;
    sdw_status s = eval(c, k_read, &a, 2, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    *out = (sdw_pool_job_fields){.queue_position = -1};
    const redisReply *h = sdw_redis_reply_at(r, 0);
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 0) {
        freeReplyObject(r);
        return SDW_OK;
    }
    if (!h || h->type != REDIS_REPLY_ARRAY || h->elements != 17 || r->elements != 5 ||
        !sdw_pool_state_parse(sdw_redis_reply_str(h->element[1]), &out->state)) {
        freeReplyObject(r);
        return bad_reply(err, "a job's status");
    }
    out->exists = true;
    copy_str(out->model, sizeof out->model, h->element[0]);
    out->version = (uint64_t)num_at(h->element[2]);
    out->preview_seq = (uint64_t)num_at(h->element[3]);
    out->n = (int)num_at(h->element[4]);
    out->n_done = (int)num_at(h->element[5]);
    out->step = (int)num_at(h->element[6]);
    out->total = (int)num_at(h->element[7]);
    out->deliveries = (int)num_at(h->element[8]);
    out->created = num_at(h->element[9]);
    out->started = num_at(h->element[10]);
    out->finished = num_at(h->element[11]);
    out->cancel_requested = num_at(h->element[12]) != 0;
    out->interrupted = num_at(h->element[13]) != 0;
    copy_str(out->worker, sizeof out->worker, h->element[14]);
    copy_str(out->error, sizeof out->error, h->element[15]);
    const char *req = sdw_redis_reply_str(h->element[16]);
    out->req_json = req ? sdw_xstrdup(req) : NULL;
    out->now = num_at(r->element[1]);
    long long pos = -1;
    sdw_redis_reply_ll(r->element[2], &pos);
    out->queue_position = (int)pos;
    out->mean_job_s = num_at(r->element[3]);
    copy_str(out->last_event, sizeof out->last_event, r->element[4]);
    freeReplyObject(r);
    if (!out->req_json) {
        out->exists = false;
        return bad_reply(err, "a job's status (no request)");
    }
    return SDW_OK;
}

/* HMGET of two fields of a job's hash. */
static sdw_status hmget2(sdw_redis *c, const char *prefix, const char *job_id, const char *f1,
                         const char *f2, redisReply **r, sdw_error *err) {
    sdw_redis_args a = {0};
    sdw_redis_args_str(&a, "HMGET");
    job_key(&a, prefix, job_id, false);
    sdw_redis_args_str(&a, f1);
    sdw_redis_args_str(&a, f2);
    sdw_status s = sdw_redis_exec(c, &a, 0, r, err);
    sdw_redis_args_free(&a);
    if (!s && (*r)->elements != 2) {
        freeReplyObject(*r);
        s = bad_reply(err, "HMGET");
    }
    return s;
}

static uint8_t *dup_bytes(const redisReply *r, size_t *len) {
    uint8_t *p = sdw_xmalloc(r->len + 1);
    memcpy(p, r->str, r->len);
    p[r->len] = 0;
    *len = r->len;
    return p;
}

sdw_status sdw_pool_job_image(sdw_redis *c, const char *prefix, const char *job_id, int i,
                              uint8_t **png, size_t *png_len, char **info_json, sdw_error *err) {
    char f1[32], f2[32];
    snprintf(f1, sizeof f1, "img:%d", i);
    snprintf(f2, sizeof f2, "info:%d", i);
    redisReply *r = NULL;
    sdw_status s = hmget2(c, prefix, job_id, f1, f2, &r, err);
    if (s) return s;
    if (r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return sdw_error_set(err, SDW_E_NOT_FOUND, "job %s has no image %d", job_id, i);
    }
    size_t n;
    *png = dup_bytes(r->element[0], png_len);
    *info_json = (char *)dup_bytes(r->element[1], &n);
    freeReplyObject(r);
    return SDW_OK;
}

sdw_status sdw_pool_job_preview(sdw_redis *c, const char *prefix, const char *job_id,
                                uint8_t **png, size_t *len, uint64_t *seq, sdw_error *err) {
    redisReply *r = NULL;
    sdw_status s = hmget2(c, prefix, job_id, "preview", "preview_seq", &r, err);
    if (s) return s;
    if (r->element[0]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        return sdw_error_set(err, SDW_E_NOT_FOUND, "job %s has no preview (none yet, or the job "
                             "has ended: its previews are gone, its images stay)", job_id);
    }
    *png = dup_bytes(r->element[0], len);
    if (seq) *seq = (uint64_t)num_at(r->element[1]);
    freeReplyObject(r);
    return SDW_OK;
}

sdw_status sdw_pool_job_wait_event(sdw_redis *c, const char *prefix, const char *job_id,
                                   char last_event[SDW_POOL_ID_MAX], double block_s, bool *got,
                                   sdw_error *err) {
    sdw_redis_args a = {0};
    sdw_redis_args_str(&a, "XREAD");
    sdw_redis_args_str(&a, "COUNT");
    sdw_redis_args_int(&a, SDW_POOL_EVENTS_MAX);
    sdw_redis_args_str(&a, "BLOCK");
    /* BLOCK 0 would wait forever */
    sdw_redis_args_int(&a, (long long)SDW_MAX(1.0, block_s * 1000));
    sdw_redis_args_str(&a, "STREAMS");
    job_key(&a, prefix, job_id, true);
    sdw_redis_args_str(&a, last_event);
    redisReply *r = NULL;
    sdw_status s = sdw_redis_exec(c, &a, block_s, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    *got = false;
    /* [[key, [[id, fields], ...]]] or nil */
    const redisReply *entries = sdw_redis_reply_at(sdw_redis_reply_at(r, 0), 1);
    if (entries && entries->type == REDIS_REPLY_ARRAY && entries->elements > 0) {
        const char *id = sdw_redis_reply_str(
            sdw_redis_reply_at(entries->element[entries->elements - 1], 0));
        if (id) {
            snprintf(last_event, SDW_POOL_ID_MAX, "%s", id);
            *got = true;
        }
    }
    freeReplyObject(r);
    return SDW_OK;
}

void sdw_pool_worker_info_free(sdw_pool_worker_info *w, int n) {
    if (!w) return;
    for (int i = 0; i < n; i++) {
        free(w[i].caps_json);
        free(w[i].description);
    }
    free(w);
}

static int worker_cmp(const void *a, const void *b) {
    const sdw_pool_worker_info *x = a, *y = b;
    int c = strcmp(x->model, y->model);
    return c ? c : strcmp(x->id, y->id);
}

sdw_status sdw_pool_workers_read(sdw_redis *c, const char *prefix, sdw_pool_worker_info **out,
                                 int *n, sdw_error *err) {
    sdw_redis_args a = {0};
    key(&a, prefix, "workers", NULL);
    sdw_redis_args_str(&a, prefix);
    redisReply *r = NULL;
    sdw_status s = eval(c, k_workers, &a, 1, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return bad_reply(err, "the worker list");
    }
    sdw_pool_worker_info *w = sdw_xcalloc(r->elements + 1, sizeof *w);
    int k = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *h = r->element[i];
        sdw_pool_worker_info *x = &w[k];
        copy_str(x->id, sizeof x->id, sdw_redis_reply_field(h, "id"));
        copy_str(x->model, sizeof x->model, sdw_redis_reply_field(h, "model"));
        const char *caps = sdw_redis_reply_str(sdw_redis_reply_field(h, "caps"));
        if (!x->id[0] || !x->model[0] || !caps) continue; /* a half-written entry: not listed */
        copy_str(x->host, sizeof x->host, sdw_redis_reply_field(h, "host"));
        copy_str(x->type, sizeof x->type, sdw_redis_reply_field(h, "type"));
        copy_str(x->variant, sizeof x->variant, sdw_redis_reply_field(h, "variant"));
        copy_str(x->state, sizeof x->state, sdw_redis_reply_field(h, "state"));
        copy_str(x->job, sizeof x->job, sdw_redis_reply_field(h, "job"));
        copy_str(x->version, sizeof x->version, sdw_redis_reply_field(h, "version"));
        x->caps_json = sdw_xstrdup(caps);
        const char *d = sdw_redis_reply_str(sdw_redis_reply_field(h, "description"));
        x->description = sdw_xstrdup(d ? d : "");
        x->pid = (int)num_at(sdw_redis_reply_field(h, "pid"));
        x->threads = (int)num_at(sdw_redis_reply_field(h, "threads"));
        x->protocol = (int)num_at(sdw_redis_reply_field(h, "protocol"));
        x->jobs_done = (long long)num_at(sdw_redis_reply_field(h, "jobs_done"));
        x->jobs_failed = (long long)num_at(sdw_redis_reply_field(h, "jobs_failed"));
        x->queue = (long long)num_at(sdw_redis_reply_field(h, "queue"));
        x->started = num_at(sdw_redis_reply_field(h, "started"));
        x->heartbeat = num_at(sdw_redis_reply_field(h, "heartbeat"));
        k++;
    }
    freeReplyObject(r);
    qsort(w, (size_t)k, sizeof *w, worker_cmp);
    *out = w;
    *n = k;
    return SDW_OK;
}

/* ---- the workers' side ---- */

sdw_status sdw_pool_ensure_group(sdw_redis *c, const char *prefix, const char *model,
                                 sdw_error *err) {
    sdw_redis_args a = {0};
    sdw_redis_args_str(&a, "XGROUP");
    sdw_redis_args_str(&a, "CREATE");
    key(&a, prefix, "queue", model);
    sdw_redis_args_str(&a, SDW_POOL_GROUP);
    sdw_redis_args_str(&a, "0");
    sdw_redis_args_str(&a, "MKSTREAM");
    redisReply *r = NULL;
    sdw_error e = {0};
    sdw_status s = sdw_redis_exec(c, &a, 0, &r, &e);
    sdw_redis_args_free(&a);
    if (s == SDW_OK) freeReplyObject(r);
    else if (s == SDW_E_BACKEND && strstr(e.msg, "BUSYGROUP")) s = SDW_OK; /* it exists */
    else if (err) *err = e;
    return s;
}

void sdw_pool_entry_free(sdw_pool_entry *e) {
    if (e->reply) freeReplyObject(e->reply);
    *e = (sdw_pool_entry){0};
}

/* Fills e from one [id, [field, value ...]] element (borrowing from the reply). */
static bool read_entry(const redisReply *item, sdw_pool_entry *e) {
    const char *id = sdw_redis_reply_str(sdw_redis_reply_at(item, 0));
    const redisReply *f = sdw_redis_reply_at(item, 1);
    if (!id) return false;
    snprintf(e->id, sizeof e->id, "%s", id);
    const char *job = sdw_redis_reply_str(sdw_redis_reply_field(f, "job"));
    snprintf(e->job, sizeof e->job, "%s", job ? job : "");
    e->req = sdw_redis_reply_field(f, "req");
    e->init = sdw_redis_reply_field(f, "init");
    e->mask = sdw_redis_reply_field(f, "mask");
    for (int i = 0; i < SDW_MAX_CONTROLS; i++) {
        char name[16];
        snprintf(name, sizeof name, "control%d", i);
        e->control[i] = sdw_redis_reply_field(f, name);
    }
    return true;
}

sdw_status sdw_pool_read_new(sdw_redis *c, const char *prefix, const char *model,
                             const char *worker, double block_s, sdw_pool_entry *out, bool *got,
                             sdw_error *err) {
    sdw_redis_args a = {0};
    sdw_redis_args_str(&a, "XREADGROUP");
    sdw_redis_args_str(&a, "GROUP");
    sdw_redis_args_str(&a, SDW_POOL_GROUP);
    sdw_redis_args_str(&a, worker);
    sdw_redis_args_str(&a, "COUNT");
    sdw_redis_args_str(&a, "1");
    sdw_redis_args_str(&a, "BLOCK");
    sdw_redis_args_int(&a, (long long)SDW_MAX(1.0, block_s * 1000));
    sdw_redis_args_str(&a, "STREAMS");
    key(&a, prefix, "queue", model);
    sdw_redis_args_str(&a, ">");
    redisReply *r = NULL;
    sdw_status s = sdw_redis_exec(c, &a, block_s, &r, err);
    sdw_redis_args_free(&a);
    *got = false;
    if (s) return s;
    const redisReply *entries = sdw_redis_reply_at(sdw_redis_reply_at(r, 0), 1);
    const redisReply *item = sdw_redis_reply_at(entries, 0);
    if (item && read_entry(item, out)) {
        out->reply = r;
        *got = true;
    } else {
        freeReplyObject(r);
    }
    return SDW_OK;
}

sdw_status sdw_pool_claim_stale(sdw_redis *c, const char *prefix, const char *model,
                                const char *worker, double min_idle_s,
                                char cursor[SDW_POOL_ID_MAX], sdw_pool_entry *out, bool *got,
                                sdw_error *err) {
    sdw_redis_args a = {0};
    sdw_redis_args_str(&a, "XAUTOCLAIM");
    key(&a, prefix, "queue", model);
    sdw_redis_args_str(&a, SDW_POOL_GROUP);
    sdw_redis_args_str(&a, worker);
    sdw_redis_args_int(&a, (long long)(min_idle_s * 1000));
    sdw_redis_args_str(&a, cursor);
    sdw_redis_args_str(&a, "COUNT");
    sdw_redis_args_str(&a, "1");
    redisReply *r = NULL;
    sdw_status s = sdw_redis_exec(c, &a, 0, &r, err);
    sdw_redis_args_free(&a);
    *got = false;
    if (s) return s;
    /* [next cursor, [[id, fields] ...], [deleted ids]] */
    const char *next = sdw_redis_reply_str(sdw_redis_reply_at(r, 0));
    snprintf(cursor, SDW_POOL_ID_MAX, "%s", next ? next : "0-0");
    const redisReply *item = sdw_redis_reply_at(sdw_redis_reply_at(r, 1), 0);
    if (item && item->type == REDIS_REPLY_ARRAY && read_entry(item, out)) {
        out->reply = r;
        *got = true;
    } else {
        freeReplyObject(r);
    }
    return SDW_OK;
}

static void entry_keys(sdw_redis_args *a, const char *prefix, const char *model,
                       const char *job) {
    job_key(a, prefix, job, false);
    job_key(a, prefix, job, true);
    key(a, prefix, "queue", model);
    key(a, prefix, "waiting", model);
}

sdw_status sdw_pool_start(sdw_redis *c, const char *prefix, const char *model,
                          const sdw_pool_entry *e, const char *worker, int max_deliveries,
                          double result_ttl_s, sdw_pool_start_out *out, sdw_error *err) {
    sdw_redis_args a = {0};
    entry_keys(&a, prefix, model, e->job);
    sdw_redis_args_str(&a, e->job);
    sdw_redis_args_str(&a, worker);
    sdw_redis_args_str(&a, e->id);
    sdw_redis_args_int(&a, max_deliveries);
    sdw_redis_args_int(&a, ttl_arg(result_ttl_s));
    redisReply *r = NULL;
    sdw_status s = eval(c, k_start, &a, 4, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    *out = (sdw_pool_start_out){0};
    const char *w = word(r);
    long long d = 0;
    sdw_redis_reply_ll(sdw_redis_reply_at(r, 1), &d);
    out->deliveries = (int)d;
    copy_str(out->stop, sizeof out->stop, sdw_redis_reply_at(r, 2));
    if (!strcmp(w, "run")) out->verdict = SDW_POOL_RUN;
    else if (!strcmp(w, "skipped")) out->verdict = SDW_POOL_SKIPPED;
    else if (!strcmp(w, "failed")) out->verdict = SDW_POOL_FAILED;
    else s = bad_reply(err, "a job's start");
    freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_progress(sdw_redis *c, const char *prefix, const char *model,
                             const char *job_id, const char *entry, const char *worker,
                             const sdw_pool_progress_in *in, sdw_pool_verdict *verdict,
                             char stop[16], sdw_error *err) {
    sdw_redis_args a = {0};
    job_key(&a, prefix, job_id, false);
    job_key(&a, prefix, job_id, true);
    key(&a, prefix, "queue", model);
    sdw_redis_args_str(&a, job_id);
    sdw_redis_args_str(&a, worker);
    sdw_redis_args_str(&a, entry);
    sdw_redis_args_str(&a, in->changed ? "1" : "0");
    sdw_redis_args_int(&a, in->step);
    sdw_redis_args_int(&a, in->total);
    sdw_redis_args_int(&a, in->n_done);
    sdw_redis_args_int(&a, (long long)in->preview_seq);
    sdw_redis_args_str(&a, in->preview ? "1" : "0");
    if (in->preview) sdw_redis_args_bin(&a, in->preview, in->preview_len);
    else sdw_redis_args_str(&a, "");
    redisReply *r = NULL;
    sdw_status s = eval(c, k_progress, &a, 3, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    const char *w = word(r);
    copy_str(stop, 16, sdw_redis_reply_at(r, 1));
    if (!strcmp(w, "run")) *verdict = SDW_POOL_RUN;
    else if (!strcmp(w, "stop")) *verdict = SDW_POOL_STOP;
    else if (!strcmp(w, "lost")) *verdict = SDW_POOL_LOST;
    else s = bad_reply(err, "a job's progress");
    freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_finish(sdw_redis *c, const char *prefix, const char *model,
                           const char *job_id, const char *entry, const sdw_pool_finish_in *in,
                           bool *stored, sdw_error *err) {
    SDW_ASSERT(sdw_job_state_terminal(in->state));
    sdw_redis_args a = {0};
    entry_keys(&a, prefix, model, job_id);
    key(&a, prefix, "model", model);
    sdw_redis_args_str(&a, job_id);
    sdw_redis_args_str(&a, entry);
    sdw_redis_args_str(&a, sdw_pool_state_str(in->state));
    sdw_redis_args_str(&a, in->error ? in->error : "");
    sdw_redis_args_str(&a, in->interrupted ? "1" : "0");
    sdw_redis_args_int(&a, in->n_done);
    sdw_redis_args_int(&a, ttl_arg(in->result_ttl_s));
    for (int i = 0; i < in->n_done; i++) {
        sdw_redis_args_bin(&a, in->pngs[i], in->png_lens[i]);
        sdw_redis_args_str(&a, in->infos[i]);
    }
    redisReply *r = NULL;
    sdw_status s = eval(c, k_finish, &a, 5, &r, err);
    sdw_redis_args_free(&a);
    if (s) return s;
    const char *w = word(r);
    if (!strcmp(w, "stored")) *stored = true;
    else if (!strcmp(w, "already")) *stored = false;
    else s = bad_reply(err, "a job's result");
    freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_release(sdw_redis *c, const char *prefix, const char *model,
                            const char *job_id, const char *entry, const char *worker,
                            sdw_error *err) {
    sdw_redis_args a = {0};
    entry_keys(&a, prefix, model, job_id);
    sdw_redis_args_str(&a, job_id);
    sdw_redis_args_str(&a, worker);
    sdw_redis_args_str(&a, entry);
    /* idle for a day: past any visibility timeout, so the next claim takes it */
    sdw_redis_args_int(&a, 86400000LL);
    redisReply *r = NULL;
    sdw_status s = eval(c, k_release, &a, 4, &r, err);
    sdw_redis_args_free(&a);
    if (!s) freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_heartbeat(sdw_redis *c, const char *prefix, const sdw_pool_heartbeat_in *in,
                              sdw_error *err) {
    sdw_redis_args a = {0};
    key(&a, prefix, "worker", in->id);
    key(&a, prefix, "workers", NULL);
    key(&a, prefix, "waiting", in->model);
    sdw_redis_args_int(&a, ttl_arg(in->ttl_s));
    sdw_redis_args_str(&a, in->id);
    const char *const kv[] = {"id", in->id, "host", in->host, "model", in->model, "type",
                              in->type, "variant", in->variant, "description", in->description,
                              "caps", in->caps_json, "state", in->state, "job", in->job,
                              "version", in->version};
    for (size_t i = 0; i < SDW_ARRAY_LEN(kv); i++) sdw_redis_args_str(&a, kv[i] ? kv[i] : "");
    sdw_redis_args_str(&a, "pid");
    sdw_redis_args_int(&a, in->pid);
    sdw_redis_args_str(&a, "threads");
    sdw_redis_args_int(&a, in->threads);
    sdw_redis_args_str(&a, "protocol");
    sdw_redis_args_int(&a, SDW_POOL_PROTOCOL);
    sdw_redis_args_str(&a, "jobs_done");
    sdw_redis_args_int(&a, in->jobs_done);
    sdw_redis_args_str(&a, "jobs_failed");
    sdw_redis_args_int(&a, in->jobs_failed);
    redisReply *r = NULL;
    sdw_status s = eval(c, k_heartbeat, &a, 3, &r, err);
    sdw_redis_args_free(&a);
    if (!s) freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_deregister(sdw_redis *c, const char *prefix, const char *model,
                               const char *worker, sdw_error *err) {
    sdw_redis_args a = {0};
    key(&a, prefix, "worker", worker);
    key(&a, prefix, "workers", NULL);
    key(&a, prefix, "queue", model);
    sdw_redis_args_str(&a, worker);
    redisReply *r = NULL;
    sdw_status s = eval(c, k_deregister, &a, 3, &r, err);
    sdw_redis_args_free(&a);
    if (!s) freeReplyObject(r);
    return s;
}

sdw_status sdw_pool_prune_consumers(sdw_redis *c, const char *prefix, const char *model,
                                    double idle_s, sdw_error *err) {
    sdw_redis_args a = {0};
    key(&a, prefix, "queue", model);
    sdw_redis_args_int(&a, (long long)(idle_s * 1000));
    redisReply *r = NULL;
    sdw_status s = eval(c, k_prune, &a, 1, &r, err);
    sdw_redis_args_free(&a);
    if (!s) freeReplyObject(r);
    return s;
}
