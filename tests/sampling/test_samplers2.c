/* The few-step and higher-order samplers beyond what the goldens show (test_samplers walks the
 * txt2img-{heun,lms,unipc,lcm} goldens step by step): the LMS coefficients against
 * scipy.integrate.quad, the Karras schedules of heun / lms / unipc, the call lists (heun's
 * repeated timesteps, lcm's distillation subset), Karras refused where diffusers has none, and
 * image-to-image starts that would run past the schedule refused.
 *
 * Reference values were produced with the real diffusers 0.25.1 scheduler classes on torch 1.13
 * and scipy 1.10.1 (the fixture generator's versions) for the tiny-sd15 schedule config
 * (= sdw_scheduler_config_sd15), printed with 9 significant digits (exact float32). */
#include "sdw_test.h"

#include "sampling/sampler.h"
#include "sampling/sampler_impl.h"

#include <stdlib.h>

static sdw_sampler *make(const char *name, const sdw_scheduler_config *cfg, int steps, bool karras,
                         sdw_error *err) {
    sdw_sampler *s = NULL;
    sdw_sampler_create(name, cfg, &(sdw_sampler_params){.steps = steps, .karras = karras}, &s, err);
    return s;
}

/* ---- LMS coefficients: get_lms_coefficient(order, t, cur), float32 ---- */

typedef struct lms_ref {
    int t, order, cur;
    float coeff;
} lms_ref;

/* leading spacing, 30 steps */
static const lms_ref k_lms30[] = {
    {0, 1, 0, -1.93326473f},    {1, 2, 0, -2.15205932f},    {1, 2, 1, 0.612787068f},
    {2, 3, 0, -2.06978512f},    {2, 3, 1, 1.10271502f},     {2, 3, 2, -0.268858105f},
    {3, 4, 0, -1.88818812f},    {3, 4, 1, 1.40642118f},     {3, 4, 2, -0.623469234f},
    {3, 4, 3, 0.104625873f},    {15, 4, 0, -0.300208777f},  {15, 4, 1, 0.261257201f},
    {15, 4, 2, -0.1345945f},    {15, 4, 3, 0.0266067907f},  {28, 4, 0, -0.528491914f},
    {28, 4, 1, 0.864509106f},   {28, 4, 2, -0.654785752f},  {28, 4, 3, 0.17791675f},
    {29, 4, 0, -0.0556719899f}, {29, 4, 1, 0.0367684178f},  {29, 4, 2, -0.0322038494f},
    {29, 4, 3, 0.00979293883f},
};

/* Karras sigmas, 12 steps */
static const lms_ref k_lms12k[] = {
    {0, 1, 0, -2.65552616f},     {1, 2, 0, -2.67081285f},    {1, 2, 1, 0.718015432f},
    {2, 3, 0, -2.24401665f},     {2, 3, 1, 1.06751871f},     {2, 3, 2, -0.235918313f},
    {3, 4, 0, -1.72758043f},     {3, 4, 1, 1.0697819f},      {3, 4, 2, -0.402751297f},
    {3, 4, 3, 0.057674963f},     {6, 4, 0, -0.516354799f},   {6, 4, 1, 0.288208634f},
    {6, 4, 2, -0.0979686081f},   {6, 4, 3, 0.0125707891f},   {10, 4, 0, -0.0633245632f},
    {10, 4, 1, 0.0283422098f},   {10, 4, 2, -0.00771088526f}, {10, 4, 3, 0.000777950103f},
    {11, 4, 0, -0.081208691f},   {11, 4, 1, 0.0533698462f},  {11, 4, 2, -0.0149165234f},
    {11, 4, 3, 0.00144088699f},
};

static void check_lms(int steps, bool karras, const lms_ref *ref, size_t n_ref) {
    sdw_scheduler_config c = sdw_scheduler_config_sd15();
    sdw_error err = {0};
    sdw_sampler *s = make("lms", &c, steps, karras, &err);
    ASSERT_TRUE(s != NULL);
    float sig[64];
    for (int i = 0; i <= sdw_sampler_n_calls(s); i++)
        sig[i] = sdw_sampler_sigma(s, i);
    sdw_sampler_destroy(s);
    int exact = 0;
    for (size_t k = 0; k < n_ref; k++) {
        const float got = (float)sdw__lms_coefficient(sig, ref[k].order, ref[k].t, ref[k].cur);
        if (got == ref[k].coeff)
            exact++;
        else
            fprintf(stderr, "  lms t %d order %d cur %d: %.9g, want %.9g\n", ref[k].t, ref[k].order,
                    ref[k].cur, (double)got, (double)ref[k].coeff);
    }
    ASSERT_EQ_INT(exact, (int)n_ref);
}

/* The coefficients equal scipy's to the float32 bit (QUADPACK's Kronrod sum of the float32
 * integrand), not merely to the integral's accuracy. */
static void test_lms_coefficients(void) {
    check_lms(30, false, k_lms30, SDW_ARRAY_LEN(k_lms30));
    check_lms(12, true, k_lms12k, SDW_ARRAY_LEN(k_lms12k));
}

/* ---- Karras schedules (6 steps, leading spacing as the config says) ---- */

static void check_schedule(const char *name, const float *ts, int n_ts, const float *sig) {
    sdw_scheduler_config c = sdw_scheduler_config_sd15();
    sdw_error err = {0};
    sdw_sampler *s = make(name, &c, 6, true, &err);
    ASSERT_TRUE(s != NULL);
    ASSERT_EQ_INT(sdw_sampler_n_calls(s), n_ts);
    int bad = 0;
    for (int i = 0; i < n_ts; i++)
        bad += sdw_sampler_timestep(s, i) != ts[i];
    for (int i = 0; i <= n_ts; i++)
        bad += sdw_sampler_sigma(s, i) != sig[i];
    sdw_sampler_destroy(s);
    ASSERT_EQ_INT(bad, 0);
}

static void test_karras_schedules(void) {
    static const float heun_ts[] = {831.0f,      654.294617f, 654.294617f, 410.485626f,
                                    410.485626f, 153.512131f, 153.512131f, 24.6493225f,
                                    24.6493225f, 1.0f,        1.0f};
    static const float heun_sig[] = {5.90645075f,  2.79078603f,  2.79078603f, 1.20510209f,
                                     1.20510209f,  0.464010805f, 0.464010805f, 0.1536244f,
                                     0.1536244f,   0.041314479f, 0.041314479f, 0.0f};
    check_schedule("heun", heun_ts, 11, heun_sig);
    static const float lms_ts[] = {831.0f,      654.294617f, 410.485626f,
                                   153.512131f, 24.6493225f, 1.0f};
    static const float lms_sig[] = {5.90645075f, 2.79078603f, 1.20510209f, 0.464010805f,
                                    0.1536244f,  0.041314479f, 0.0f};
    check_schedule("lms", lms_ts, 6, lms_sig);
    /* unipc: Karras over the whole table, rounded timesteps, the last sigma repeated */
    static const float unipc_ts[] = {999.0f, 837.0f, 594.0f, 249.0f, 30.0f, 0.0f};
    static const float unipc_sig[] = {14.614645f,   6.08215809f,  2.23216128f,  0.692573905f,
                                      0.169757947f, 0.0291675329f, 0.0291675329f};
    check_schedule("unipc", unipc_ts, 6, unipc_sig);
}

/* ---- call lists, orders, refusals ---- */

static void test_names_and_orders(void) {
    static const char *const added[] = {"heun", "lms", "unipc", "lcm"};
    sdw_scheduler_config c = sdw_scheduler_config_sd15();
    sdw_error err = {0};
    for (size_t k = 0; k < SDW_ARRAY_LEN(added); k++) {
        bool listed = false;
        for (const char *const *n = sdw_sampler_names(); *n; n++)
            listed = listed || strcmp(*n, added[k]) == 0;
        ASSERT_TRUE(listed);
        sdw_sampler *s = make(added[k], &c, 10, false, &err);
        ASSERT_TRUE(s && strcmp(sdw_sampler_name(s), added[k]) == 0);
        ASSERT_EQ_INT(sdw_sampler_order(s), strcmp(added[k], "heun") == 0 ? 2 : 1);
        sdw_sampler_destroy(s);
    }
    /* Karras where the diffusers class has use_karras_sigmas: HeunDiscrete, LMSDiscrete,
     * UniPCMultistep; LCMScheduler has none */
    ASSERT_TRUE(sdw_sampler_supports_karras("heun"));
    ASSERT_TRUE(sdw_sampler_supports_karras("lms"));
    ASSERT_TRUE(sdw_sampler_supports_karras("unipc"));
    ASSERT_TRUE(!sdw_sampler_supports_karras("lcm"));
    ASSERT_TRUE(!make("lcm", &c, 4, true, &err));
    ASSERT_EQ_INT(err.code, SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "Karras");
    /* the flow-matching schedule keeps its one sampler */
    sdw_scheduler_config flow = sdw_scheduler_config_default();
    flow.flow_matching = true;
    ASSERT_TRUE(!make("lcm", &flow, 4, false, &err));
    ASSERT_STR_CONTAINS(err.msg, "flow-matching");
}

/* heun: every timestep after the first twice (diffusers' timesteps), 2 * steps - 1 calls */
static void test_heun_calls(void) {
    sdw_scheduler_config c = sdw_scheduler_config_sd15();
    sdw_error err = {0};
    sdw_sampler *s = make("heun", &c, 4, false, &err);
    ASSERT_TRUE(s != NULL);
    static const float want[] = {751, 501, 501, 251, 251, 1, 1};
    ASSERT_EQ_INT(sdw_sampler_n_calls(s), 7);
    for (int i = 0; i < 7; i++)
        ASSERT_TRUE(sdw_sampler_timestep(s, i) == want[i]);
    ASSERT_TRUE(sdw_sampler_sigma(s, 7) == 0.0f);
    /* an image-to-image start is a step boundary: t_start * order; inside a step is refused */
    const int t_start = sdw_sampler_begin_for_strength(4, 0.5);
    ASSERT_STATUS(sdw_sampler_set_begin(s, t_start * sdw_sampler_order(s), &err), SDW_OK);
    ASSERT_EQ_INT(sdw_sampler_begin(s), 4);
    ASSERT_STATUS(sdw_sampler_set_begin(s, 3, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "inside a step");
    sdw_sampler_destroy(s);
}

/* lcm: steps evenly spaced in index over the 50-step distillation schedule k * 20 - 1 */
static void test_lcm_schedule(void) {
    sdw_scheduler_config c = sdw_scheduler_config_sd15();
    sdw_error err = {0};
    sdw_sampler *s = make("lcm", &c, 8, false, &err);
    ASSERT_TRUE(s != NULL);
    /* floor(linspace(0, 50, 8, endpoint=False)) = 0 6 12 18 25 31 37 43 */
    static const float want[] = {999, 879, 759, 639, 499, 379, 259, 139};
    for (int i = 0; i < 8; i++)
        ASSERT_TRUE(sdw_sampler_timestep(s, i) == want[i]);
    ASSERT_TRUE(sdw_sampler_init_noise_sigma(s) == 1.0f);
    sdw_sampler_destroy(s);
    ASSERT_TRUE(!make("lcm", &c, 51, false, &err)); /* more than the 50 distillation steps */
    ASSERT_STR_CONTAINS(err.msg, "50");
}

/* lcm draws one randn per step but the last; the others draw nothing */
static void test_lcm_draws(void) {
    sdw_scheduler_config c = sdw_scheduler_config_sd15();
    sdw_error err = {0};
    sdw_sampler *s = make("lcm", &c, 3, false, &err);
    ASSERT_TRUE(s != NULL);
    float x[16] = {0}, mo[16] = {0};
    sdw_rng rng;
    sdw_rng_init(&rng, SDW_RNG_TORCH, 7);
    int draws = 0;
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(sdw_sampler_step(s, i, mo, x, 16, &rng, &err), &err);
        draws += sdw_sampler_last_noise(s) != NULL;
    }
    ASSERT_EQ_INT(draws, 2);
    sdw_sampler_destroy(s);
}

/* A schedule whose first timesteps coincide (Karras rounding on the cosine schedule) cannot
 * run from call 0 — diffusers asserts at its last step — so the first step says so; a later
 * image-to-image start on it is valid. */
static void test_repeated_start(void) {
    sdw_scheduler_config c = sdw_scheduler_config_default();
    c.beta_schedule = SDW_BETA_SQUAREDCOS_CAP_V2;
    sdw_error err = {0};
    sdw_sampler *s = make("unipc", &c, 13, true, &err);
    ASSERT_TRUE(s != NULL);
    ASSERT_TRUE(sdw_sampler_timestep(s, 0) == sdw_sampler_timestep(s, 1));
    float x[4] = {0}, mo[4] = {0};
    ASSERT_STATUS(sdw_sampler_step(s, 0, mo, x, 4, NULL, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "repeats");
    ASSERT_STATUS(sdw_sampler_set_begin(s, 2, &err), SDW_OK);
    ASSERT_OK(sdw_sampler_step(s, 2, mo, x, 4, NULL, &err), &err);
    sdw_sampler_destroy(s);
}

int main(void) {
    RUN(test_lms_coefficients);
    RUN(test_karras_schedules);
    RUN(test_names_and_orders);
    RUN(test_heun_calls);
    RUN(test_lcm_schedule);
    RUN(test_lcm_draws);
    RUN(test_repeated_start);
    return sdw_test_finish();
}
