/* The worker pool's payloads (pool/payload.h): a job request, a model's capabilities and a
 * result's info survive the trip through Redis bit for bit, and malformed or oversized payloads
 * are refused naming what is wrong. */
#include "sdw_test.h"

#include "pool/payload.h"

#include <stdlib.h>

static const sdw_param k_params[] = {{"max_sequence_length", 256}, {"shift", 1.0 / 3.0}};

static const sdw_lora_ref k_loras[] = {{.name = "detail", .multiplier = 0.3f},
                                       {.name = "styles/ink", .multiplier = -1.7f}};

/* A request with every field away from its default, images included. */
static sdw_request full_request(sdw_image *init, sdw_image *mask) {
    static uint8_t pix[5 * 3 * 4], mpix[5 * 3];
    for (size_t i = 0; i < sizeof pix; i++) pix[i] = (uint8_t)(i * 37 + 1);
    for (size_t i = 0; i < sizeof mpix; i++) mpix[i] = (uint8_t)(i * 91);
    *init = (sdw_image){5, 3, 4, pix};
    *mask = (sdw_image){5, 3, 1, mpix};
    sdw_request q = sdw_request_default();
    q.prompt = "a photo of a \"cat\"\n\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80";
    q.negative_prompt = "blurry";
    q.width = 512;
    q.height = 768;
    q.steps = 23;
    q.guidance = 7.3f; /* not a short decimal: must come back bit-exact */
    q.seed = INT64_MAX - 3;
    q.sampler = "dpm++2m";
    q.scheduler = "karras";
    q.rng = SDW_RNG_PHILOX;
    q.strength = 0.1 + 0.2; /* 0.30000000000000004 */
    q.params = k_params;
    q.n_params = 2;
    q.vae_tiling = SDW_TILING_ON;
    q.decoder = SDW_DECODER_TAESD;
    q.profile = true;
    q.init_image = init;
    q.mask = mask;
    q.prompt_syntax = true;
    q.clip_skip = 2;
    q.hires = (sdw_hires){.enable = true, .scale = 1.0 / 3.0 + 1, .resize_width = 96,
                          .resize_height = 0, .upscaler = SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED,
                          .steps = 7, .strength = 0.1 + 0.6};
    q.loras = k_loras;
    q.n_loras = 2;
    /* two ControlNets, their images of other sizes and channels than the init image's */
    static uint8_t c0[7 * 2 * 3], c1[3 * 4 * 1];
    for (size_t i = 0; i < sizeof c0; i++) c0[i] = (uint8_t)(i * 13 + 5);
    for (size_t i = 0; i < sizeof c1; i++) c1[i] = (uint8_t)(255 - i * 7);
    static sdw_image ci[2];
    ci[0] = (sdw_image){7, 2, 3, c0};
    ci[1] = (sdw_image){3, 4, 1, c1};
    static sdw_control ctl[2];
    ctl[0] = sdw_control_default();
    ctl[0].name = "canny";
    ctl[0].image = &ci[0];
    ctl[0].scale = 0.7f;
    ctl[0].start = 0.1 + 0.2;
    ctl[0].end = 0.9;
    ctl[1] = sdw_control_default();
    ctl[1].name = "sd15/depth [abc123]";
    ctl[1].image = &ci[1];
    q.controls = ctl;
    q.n_controls = 2;
    q.control_guess_mode = true;
    return q;
}

/* The pixels of q's images, as they travel. */
static sdw_pool_pixels pixels_of(const sdw_request *q) {
    sdw_pool_pixels px = {0};
    if (q->init_image) px.init = q->init_image->data, px.init_len = sdw_pool_image_bytes(q->init_image);
    if (q->mask) px.mask = q->mask->data, px.mask_len = sdw_pool_image_bytes(q->mask);
    for (int i = 0; i < q->n_controls; i++) {
        px.control[i] = q->controls[i].image->data;
        px.control_len[i] = sdw_pool_image_bytes(q->controls[i].image);
    }
    return px;
}

static void test_request_round_trip(void) {
    sdw_image init, mask;
    sdw_request q = full_request(&init, &mask);
    char *json = sdw_pool_request_json(&q, 3);
    sdw_pool_request pr;
    sdw_error err = {0};
    sdw_pool_pixels px = pixels_of(&q);
    ASSERT_OK(sdw_pool_request_parse(json, strlen(json), &px, 1 << 20, &pr, &err), &err);
    const sdw_request *r = &pr.req;
    ASSERT_EQ_INT(pr.n_images, 3);
    ASSERT_TRUE(!strcmp(r->prompt, q.prompt));
    ASSERT_TRUE(!strcmp(r->negative_prompt, "blurry"));
    ASSERT_EQ_INT(r->width, 512);
    ASSERT_EQ_INT(r->height, 768);
    ASSERT_EQ_INT(r->steps, 23);
    ASSERT_TRUE(r->guidance == q.guidance);
    ASSERT_TRUE(r->seed == INT64_MAX - 3);
    ASSERT_TRUE(!strcmp(r->sampler, "dpm++2m") && !strcmp(r->scheduler, "karras"));
    ASSERT_EQ_INT(r->rng, SDW_RNG_PHILOX);
    ASSERT_TRUE(r->strength == q.strength);
    ASSERT_EQ_INT(r->n_params, 2);
    for (int i = 0; i < 2; i++) {
        /* jansson keeps insertion order */
        ASSERT_TRUE(!strcmp(r->params[i].name, k_params[i].name));
        ASSERT_TRUE(r->params[i].value == k_params[i].value);
    }
    ASSERT_EQ_INT(r->vae_tiling, SDW_TILING_ON);
    ASSERT_EQ_INT(r->decoder, SDW_DECODER_TAESD);
    ASSERT_TRUE(r->profile);
    ASSERT_TRUE(r->init_image && r->mask && r->stop == NULL && r->resolved == NULL);
    ASSERT_EQ_INT(r->init_image->width, 5);
    ASSERT_EQ_INT(r->init_image->channels, 4);
    ASSERT_TRUE(!memcmp(r->init_image->data, init.data, sdw_pool_image_bytes(&init)));
    ASSERT_EQ_INT(r->mask->channels, 1);
    ASSERT_TRUE(!memcmp(r->mask->data, mask.data, sdw_pool_image_bytes(&mask)));
    ASSERT_TRUE(r->prompt_syntax);
    ASSERT_EQ_INT(r->clip_skip, 2);
    ASSERT_TRUE(r->hires.enable && r->hires.scale == q.hires.scale &&
                r->hires.resize_width == 96 && r->hires.resize_height == 0 &&
                r->hires.upscaler == SDW_UPSCALE_LATENT_BICUBIC_ANTIALIASED &&
                r->hires.steps == 7 && r->hires.strength == q.hires.strength);
    ASSERT_EQ_INT(r->n_loras, 2);
    for (int i = 0; i < 2; i++) {
        ASSERT_TRUE(!strcmp(r->loras[i].name, k_loras[i].name) && r->loras[i].path == NULL);
        ASSERT_TRUE(r->loras[i].multiplier == k_loras[i].multiplier);
    }
    ASSERT_EQ_INT(r->n_controls, 2);
    for (int i = 0; i < 2; i++) {
        const sdw_control *a = &r->controls[i], *b = &q.controls[i];
        ASSERT_TRUE(!strcmp(a->name, b->name) && a->path == NULL);
        ASSERT_TRUE(a->scale == b->scale && a->start == b->start && a->end == b->end);
        ASSERT_TRUE(a->image->width == b->image->width && a->image->height == b->image->height &&
                    a->image->channels == b->image->channels);
        ASSERT_TRUE(!memcmp(a->image->data, b->image->data, sdw_pool_image_bytes(b->image)));
    }
    ASSERT_TRUE(r->control_guess_mode);
    /* written again, the text is the same: nothing drifts on a second trip */
    char *again = sdw_pool_request_json(r, pr.n_images);
    ASSERT_TRUE(!strcmp(json, again));
    free(again);
    sdw_pool_request_free(&pr);

    /* the summary: the same JSON read without pixels keeps the mode and the sizes */
    ASSERT_OK(sdw_pool_request_parse(json, strlen(json), NULL, 0, &pr, &err), &err);
    ASSERT_TRUE(pr.req.init_image && pr.req.mask && !pr.req.init_image->data);
    ASSERT_EQ_INT(pr.req.init_image->height, 3);
    ASSERT_TRUE(pr.req.n_controls == 2 && pr.req.controls[1].image->width == 3 &&
                !pr.req.controls[1].image->data);
    sdw_pool_request_free(&pr);
    free(json);
}

static void test_request_defaults_round_trip(void) {
    sdw_request q = sdw_request_default();
    q.prompt = "x";
    char *json = sdw_pool_request_json(&q, 1);
    sdw_pool_request pr;
    sdw_error err = {0};
    ASSERT_OK(sdw_pool_request_parse(json, strlen(json), NULL, 0, &pr, &err), &err);
    ASSERT_TRUE(pr.req.negative_prompt == NULL && pr.req.sampler == NULL &&
                pr.req.scheduler == NULL && pr.req.init_image == NULL && pr.req.mask == NULL);
    ASSERT_TRUE(pr.req.seed == q.seed && pr.req.guidance == q.guidance &&
                pr.req.strength == q.strength && pr.req.width == 0 && pr.req.n_params == 0);
    /* the later fields are left out at their defaults (older workers read such a request) */
    ASSERT_TRUE(!strstr(json, "prompt_syntax") && !strstr(json, "clip_skip") &&
                !strstr(json, "hires") && !strstr(json, "loras") && !strstr(json, "controls") &&
                !strstr(json, "guess"));
    sdw_pool_request_free(&pr);
    free(json);

    /* a payload written before them (version 1 as the first workers wrote it) reads, the
     * later fields at their defaults */
    const char *old = "{\"v\":1,\"n\":1,\"prompt\":\"x\",\"width\":64,\"height\":64,"
                      "\"steps\":4,\"guidance\":7.5,\"seed\":42,\"rng\":\"torch\","
                      "\"strength\":-1,\"vae_tiling\":\"auto\",\"decoder\":\"vae\","
                      "\"profile\":false}";
    sdw_pool_pixels none = {0};
    ASSERT_OK(sdw_pool_request_parse(old, strlen(old), &none, 1 << 20, &pr, &err), &err);
    const sdw_request d = sdw_request_default();
    ASSERT_TRUE(pr.req.prompt_syntax == d.prompt_syntax && pr.req.clip_skip == 0 &&
                !pr.req.hires.enable && pr.req.n_loras == 0 && pr.req.loras == NULL &&
                pr.req.n_controls == 0 && pr.req.controls == NULL && !pr.req.control_guess_mode);
    sdw_pool_request_free(&pr);
}

/* Parses text as a payload with the pixels px (NULL: none at all) and expects a refusal whose
 * message holds want. */
static void expect_refused_px(const char *text, const sdw_pool_pixels *px, size_t max,
                              const char *want) {
    sdw_pool_request pr;
    sdw_error err = {0};
    sdw_pool_pixels none = {0};
    sdw_status s = sdw_pool_request_parse(text, strlen(text), px ? px : &none, max, &pr, &err);
    if (s == SDW_OK) {
        sdw_pool_request_free(&pr);
        sdw_test_fail(__FILE__, __LINE__, "accepted: %s", text);
        return;
    }
    if (!strstr(err.msg, want))
        sdw_test_fail(__FILE__, __LINE__, "'%s': message '%s' does not name '%s'", text, err.msg,
                      want);
    ASSERT_TRUE(pr.prompt == NULL && pr.init.data == NULL && pr.lora_names[0] == NULL &&
                pr.control_images[0].data == NULL); /* zeroed */
}

/* The same with an init image's pixels only (NULL: none). */
static void expect_refused(const char *text, const void *init, size_t init_len, size_t max,
                           const char *want) {
    sdw_pool_pixels px = {.init = init, .init_len = init_len};
    expect_refused_px(text, &px, max, want);
}

static void test_request_refusals(void) {
    uint8_t px[12] = {0};
    expect_refused("not json", NULL, 0, 0, "not valid JSON");
    expect_refused("[1]", NULL, 0, 0, "not a JSON object");
    expect_refused("{\"n\":1,\"prompt\":\"x\"}", NULL, 0, 0, "'v' is missing");
    expect_refused("{\"v\":2,\"n\":1,\"prompt\":\"x\"}", NULL, 0, 0, "version 2");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"colour\":1}", NULL, 0, 0, "'colour'");
    expect_refused("{\"v\":1,\"n\":0,\"prompt\":\"x\"}", NULL, 0, 0, "'n'");
    expect_refused("{\"v\":1,\"n\":1}", NULL, 0, 0, "'prompt' is missing");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":7}", NULL, 0, 0, "'prompt' must be a string");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"seed\":-2}", NULL, 0, 0, "'seed'");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"rng\":\"mt\"}", NULL, 0, 0, "mt");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"vae_tiling\":1}", NULL, 0, 0,
                   "vae_tiling");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"params\":{\"a\":\"b\"}}", NULL, 0, 0,
                   "params.a");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"prompt\":\"y\"}", NULL, 0, 0,
                   "duplicate");
    /* pixels that do not match the declared image, or come without one */
    const char *img = "{\"v\":1,\"n\":1,\"prompt\":\"x\",\"init_image\":{\"width\":2,"
                      "\"height\":2,\"channels\":3}}";
    expect_refused(img, px, 11, 0, "11 pixel bytes");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\"}", px, 12, 0, "without its description");
    expect_refused("{\"v\":1,\"n\":1,\"prompt\":\"x\",\"init_image\":{\"width\":2,"
                   "\"height\":2,\"channels\":5}}",
                   px, 12, 0, "'channels'");
    /* the byte bound counts the JSON and the pixels */
    expect_refused(img, px, 12, strlen(img) + 11, "over the limit");
    sdw_pool_request pr;
    sdw_error err = {0};
    sdw_pool_pixels ok = {.init = px, .init_len = 12};
    ASSERT_OK(sdw_pool_request_parse(img, strlen(img), &ok, strlen(img) + 12, &pr, &err), &err);
    sdw_pool_request_free(&pr);
    /* an image it declares must come with its pixels */
    expect_refused(img, NULL, 0, 0, "without its pixels");
}

#define HEAD "{\"v\":1,\"n\":1,\"prompt\":\"x\","

/* The later fields: wrong types and values refused naming the field; LoRAs and ControlNets by
 * name only. */
static void test_request_refusals_later_fields(void) {
    expect_refused(HEAD "\"prompt_syntax\":1}", NULL, 0, 0, "'prompt_syntax'");
    expect_refused(HEAD "\"clip_skip\":-1}", NULL, 0, 0, "'clip_skip'");
    expect_refused(HEAD "\"clip_skip\":49}", NULL, 0, 0, "'clip_skip'");
    expect_refused(HEAD "\"clip_skip\":1.5}", NULL, 0, 0, "'clip_skip'");
    expect_refused(HEAD "\"control_guess_mode\":\"yes\"}", NULL, 0, 0, "'control_guess_mode'");
    expect_refused(HEAD "\"hires\":true}", NULL, 0, 0, "hires must be an object");
    expect_refused(HEAD "\"hires\":{\"scale\":\"2\"}}", NULL, 0, 0, "hires: field 'scale'");
    expect_refused(HEAD "\"hires\":{\"denoise\":1}}", NULL, 0, 0, "hires: unknown field 'denoise'");
    expect_refused(HEAD "\"hires\":{\"steps\":-1}}", NULL, 0, 0, "hires: field 'steps'");
    expect_refused(HEAD "\"hires\":{\"upscaler\":\"Bogus\"}}", NULL, 0, 0, "Bogus");
    expect_refused(HEAD "\"loras\":{}}", NULL, 0, 0, "'loras' must be an array");
    expect_refused(HEAD "\"loras\":[\"detail\"]}", NULL, 0, 0, "loras[0] must be an object");
    expect_refused(HEAD "\"loras\":[{\"multiplier\":1}]}", NULL, 0, 0,
                   "loras[0]: field 'name' is missing");
    expect_refused(HEAD "\"loras\":[{\"name\":\"a\"}]}", NULL, 0, 0,
                   "loras[0]: field 'multiplier' is missing");
    expect_refused(HEAD "\"loras\":[{\"name\":\"a\",\"multiplier\":1},{\"name\":\"b\","
                   "\"multiplier\":\"x\"}]}",
                   NULL, 0, 0, "loras[1]: field 'multiplier' must be a number");
    expect_refused(HEAD "\"loras\":[{\"name\":\"a\",\"multiplier\":1,\"hash\":1}]}", NULL, 0,
                   0, "unknown field 'hash'");
    /* a worker never opens a file a queue entry points at */
    expect_refused(HEAD "\"loras\":[{\"path\":\"/etc/x.safetensors\",\"multiplier\":1}]}",
                   NULL, 0, 0, "loras[0]: a file given by path is not accepted");
    expect_refused(HEAD "\"loras\":[{\"name\":\"/etc/x\",\"multiplier\":1}]}", NULL, 0, 0,
                   "not a name inside");
    expect_refused(HEAD "\"loras\":[{\"name\":\"a/../../x\",\"multiplier\":1}]}", NULL, 0, 0,
                   "not a name inside");
    expect_refused(HEAD "\"loras\":[{\"name\":\"..\",\"multiplier\":1}]}", NULL, 0, 0,
                   "not a name inside");
    expect_refused(HEAD "\"loras\":[{\"name\":\"\",\"multiplier\":1}]}", NULL, 0, 0,
                   "not a name inside");
    char many[4096];
    int n = snprintf(many, sizeof many, HEAD "\"loras\":[");
    for (int i = 0; i <= SDW_LORA_MAX_PER_REQUEST; i++)
        n += snprintf(many + n, sizeof many - (size_t)n, "%s{\"name\":\"l%d\",\"multiplier\":1}",
                      i ? "," : "", i);
    snprintf(many + n, sizeof many - (size_t)n, "]}");
    expect_refused(many, NULL, 0, 0, "at most 16 LoRAs");
    /* a name that only looks like a path component is a name */
    sdw_pool_request pr;
    sdw_error err = {0};
    const char *dots = HEAD "\"loras\":[{\"name\":\"styles/..ink\",\"multiplier\":1}]}";
    ASSERT_OK(sdw_pool_request_parse(dots, strlen(dots), NULL, 0, &pr, &err), &err);
    ASSERT_TRUE(!strcmp(pr.req.loras[0].name, "styles/..ink"));
    sdw_pool_request_free(&pr);

    /* ControlNets: by name, each with its image's pixels of the declared size */
    uint8_t px[2 * 2 * 3] = {0};
    const char *ctl = HEAD "\"controls\":[{\"name\":\"canny\",\"scale\":1,\"start\":0,"
                      "\"end\":1,\"image\":{\"width\":2,\"height\":2,\"channels\":3}}]}";
    sdw_pool_pixels cp = {.control = {px}, .control_len = {12}};
    ASSERT_OK(sdw_pool_request_parse(ctl, strlen(ctl), &cp, strlen(ctl) + 12, &pr, &err), &err);
    ASSERT_TRUE(pr.req.n_controls == 1 && pr.req.controls[0].image->data != NULL);
    sdw_pool_request_free(&pr);
    expect_refused_px(ctl, &cp, strlen(ctl) + 11, "over the limit");
    cp.control_len[0] = 11;
    expect_refused_px(ctl, &cp, 0, "controls[0].image: 11 pixel bytes");
    cp.control_len[0] = 13;
    expect_refused_px(ctl, &cp, 0, "controls[0].image: 13 pixel bytes");
    expect_refused_px(ctl, NULL, 0, "controls[0].image came without its pixels");
    sdw_pool_pixels extra = {.control = {px, px}, .control_len = {12, 12}};
    expect_refused_px(ctl, &extra, 0, "pixels of control image 1 came");
    extra = (sdw_pool_pixels){.control = {px}, .control_len = {12}};
    expect_refused_px("{\"v\":1,\"n\":1,\"prompt\":\"x\"}", &extra, 0,
                      "pixels of control image 0 came");
    expect_refused(HEAD "\"controls\":[{\"name\":\"canny\"}]}", NULL, 0, 0,
                   "controls[0]: field 'image' is missing");
    expect_refused(HEAD "\"controls\":[{\"path\":\"/opt/cn\",\"image\":{\"width\":2,"
                   "\"height\":2,\"channels\":3}}]}",
                   NULL, 0, 0, "controls[0]: a file given by path is not accepted");
    expect_refused(HEAD "\"controls\":[{\"name\":\"../cn\"}]}", NULL, 0, 0, "not a name inside");
    expect_refused(HEAD "\"controls\":[{\"name\":\"c\",\"scale\":null}]}", NULL, 0, 0,
                   "controls[0]: field 'scale' must be a number");
    expect_refused(HEAD "\"controls\":[{\"name\":\"c\",\"weight\":1}]}", NULL, 0, 0,
                   "controls[0]: unknown field 'weight'");
    expect_refused(HEAD "\"controls\":[1,2,3,4,5,6,7,8,9]}", NULL, 0, 0, "at most 8 ControlNets");
    expect_refused_px(HEAD "\"controls\":[{\"name\":\"c\",\"image\":{\"width\":2,"
                      "\"height\":2,\"channels\":0}}]}",
                      &extra, 0, "controls[0].image: field 'channels'");
}

static void test_caps_round_trip(void) {
    sdw_image_model *m = NULL;
    sdw_error err = {0};
    sdw_load_options o = sdw_load_options_default();
    o.n_threads = 1;
    ASSERT_OK(sdw_model_load(sdw_test_path("models/tiny-sd15"), &o, &m, &err), &err);
    const sdw_capabilities *c = sdw_model_capabilities(m);
    char *json = sdw_pool_caps_json(c);
    sdw_pool_caps *pc = NULL;
    ASSERT_OK(sdw_pool_caps_parse(json, strlen(json), &pc, &err), &err);
    const sdw_capabilities *d = sdw_pool_caps_get(pc);
    ASSERT_TRUE(d->txt2img == c->txt2img && d->img2img == c->img2img &&
                d->inpainting == c->inpainting && d->lora == c->lora &&
                d->supports_guidance == c->supports_guidance &&
                d->supports_negative_prompt == c->supports_negative_prompt &&
                d->strength_rounds_start == c->strength_rounds_start && d->taesd == c->taesd);
    ASSERT_TRUE(d->default_width == c->default_width && d->default_steps == c->default_steps &&
                d->default_guidance == c->default_guidance && d->min_size == c->min_size &&
                d->max_size == c->max_size && d->size_multiple == c->size_multiple &&
                d->max_steps == c->max_steps);
    ASSERT_TRUE(!strcmp(d->default_sampler, c->default_sampler));
    int i = 0;
    for (; c->samplers[i]; i++) ASSERT_TRUE(d->samplers[i] && !strcmp(d->samplers[i], c->samplers[i]));
    ASSERT_TRUE(d->samplers[i] == NULL);
    for (i = 0; c->schedulers[i]; i++) ASSERT_TRUE(!strcmp(d->schedulers[i], c->schedulers[i]));
    /* a request resolves the same against both */
    sdw_request q = sdw_request_default(), r1, r2;
    q.prompt = "cat";
    ASSERT_OK(sdw_request_resolve(&q, c, &r1, &err), &err);
    ASSERT_OK(sdw_request_resolve(&q, d, &r2, &err), &err);
    ASSERT_TRUE(r1.width == r2.width && r1.steps == r2.steps && r1.guidance == r2.guidance &&
                !strcmp(r1.sampler, r2.sampler));
    /* the family options (a FLUX-like declaration) survive too */
    static const sdw_param_spec specs[] = {
        {"max_sequence_length", 1, 512, 256, true, "T5 tokens"}, {"shift", 0, 10, 1.15, false, ""},
        {NULL, 0, 0, 0, false, NULL}};
    sdw_capabilities c2 = *c;
    c2.params = specs;
    char *json2 = sdw_pool_caps_json(&c2);
    sdw_pool_caps *pc2 = NULL;
    ASSERT_OK(sdw_pool_caps_parse(json2, strlen(json2), &pc2, &err), &err);
    const sdw_param_spec *p = sdw_pool_caps_get(pc2)->params;
    ASSERT_TRUE(p && !strcmp(p[0].name, "max_sequence_length") && p[0].integer &&
                p[0].max == 512 && p[1].def == 1.15 && !p[1].integer && p[2].name == NULL);
    ASSERT_STATUS(sdw_pool_caps_parse("{\"txt2img\":1}", 13, &pc2 /* untouched */, &err),
                  SDW_E_INVALID_ARG);
    sdw_pool_caps_free(pc2);
    free(json2);
    sdw_pool_caps_free(pc);
    free(json);
    sdw_model_destroy(m);
}

static void test_info_round_trip(void) {
    sdw_result_info i = {.seed = 1234567890123LL, .width = 64, .height = 96, .steps = 7,
                         .guidance = 7.3f, .prompt_truncated = true, .seconds_encode = 0.1,
                         .seconds_denoise = 1.0 / 3.0, .seconds_first_call = 0.125,
                         .seconds_decode = 2.5, .n_denoiser_calls = 13, .strength = 0.75,
                         .seconds_image_encode = 0.2, .guidance_embedded = true,
                         .interrupted = true, .steps_done = 4, .vae_tiled = true,
                         .taesd_decoded = true};
    snprintf(i.sampler, sizeof i.sampler, "euler_a");
    snprintf(i.scheduler, sizeof i.scheduler, "karras");
    char *json = sdw_pool_info_json(&i, "a cat\nSteps: 7, Seed: 1234567890123");
    sdw_result_info o;
    char *text = NULL;
    sdw_error err = {0};
    ASSERT_OK(sdw_pool_info_parse(json, strlen(json), &o, &text, &err), &err);
    ASSERT_TRUE(o.seed == i.seed && o.width == 64 && o.height == 96 && o.steps == 7 &&
                o.guidance == i.guidance && o.prompt_truncated && o.seconds_denoise == 1.0 / 3.0 &&
                o.seconds_first_call == 0.125 && o.n_denoiser_calls == 13 && o.strength == 0.75 &&
                o.guidance_embedded && o.interrupted && o.steps_done == 4 && o.vae_tiled &&
                o.taesd_decoded && o.n_profile == 0);
    ASSERT_TRUE(!strcmp(o.sampler, "euler_a") && !strcmp(o.scheduler, "karras"));
    ASSERT_TRUE(!strcmp(text, "a cat\nSteps: 7, Seed: 1234567890123"));
    free(text);
    free(json);
    ASSERT_STATUS(sdw_pool_info_parse("{\"seed\":1}", 10, &o, &text, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "missing");
}

int main(void) {
    RUN(test_request_round_trip);
    RUN(test_request_defaults_round_trip);
    RUN(test_request_refusals);
    RUN(test_request_refusals_later_fields);
    RUN(test_caps_round_trip);
    RUN(test_info_round_trip);
    return sdw_test_finish();
}
