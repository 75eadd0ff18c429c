/* The generation run shared by every latent-diffusion family (models/diffusion.h), step for step
 * as the reference pipelines' __call__ (diffusers' StableDiffusion*Pipeline 0.25, FluxPipeline
 * 0.30.3): condition (the family), draw the initial latents (or prepare them from an init image:
 * diffusion_image.c), denoise with the chosen sampler — classifier-free guidance when the family
 * guides that way — and decode with the VAE. Random draws happen in the same order and shapes as
 * the reference, so a seed gives the reference's image. */
#include "models/diffusion.h"

#include "models/lora.h"
#include "nn/arena.h"
#include "nn/backends.h"
#include "nn/nn.h"
#include "nn/profile.h"
#include "nn/stop.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"

#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

void sdw_diffusion_tap(const sdw_diffusion *d, const char *name, const float *data, int n_dims,
                       ...) {
    if (!d->tap) return;
    int64_t shape[8];
    va_list ap;
    va_start(ap, n_dims);
    for (int i = 0; i < n_dims && i < 8; i++)
        shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    d->tap(d->tap_user, name, data, n_dims, shape);
}

void sdw_diffusion_set_tap(sdw_image_model *m, sdw_tap_fn fn, void *user) {
    SDW_ASSERT(m->ops->generate == sdw_diffusion_generate);
    sdw_diffusion *d = (sdw_diffusion *)m;
    d->tap = fn;
    d->tap_user = user;
}

sdw_status sdw_diffusion_open_file(sdw_diffusion *d, const char *path, sdw_st_file **out,
                                   sdw_error *err) {
    SDW_ASSERT(d->n_files < SDW_DIFFUSION_MAX_FILES);
    const size_t n = strlen(path);
    const bool index = n > 11 && strcmp(path + n - 11, ".index.json") == 0;
    sdw_status s = index ? sdw_st_open_sharded(path, out, err) : sdw_st_open(path, out, err);
    if (s == SDW_OK) d->files[d->n_files++] = *out;
    return s;
}

sdw_status sdw_diffusion_open_component(sdw_diffusion *d, const char *root, const char *sub,
                                        const char *stem, sdw_st_file **out, sdw_error *err) {
    static const char *const exts[] = {".safetensors", ".fp16.safetensors",
                                       ".safetensors.index.json", ".fp16.safetensors.index.json",
                                       ".bin"};
    char p[4096];
    struct stat st;
    for (size_t i = 0; i < SDW_ARRAY_LEN(exts); i++) {
        snprintf(p, sizeof p, "%s/%s/%s%s", root, sub, stem, exts[i]);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            return sdw_diffusion_open_file(d, p, out, err);
    }
    return sdw_error_set(err, SDW_E_NOT_FOUND, "%s/%s/%s.safetensors is missing", root, sub, stem);
}

/* Adds the .safetensors files directly in dir to files (headers only: opening maps them). */
static void open_folder_files(const char *dir, sdw_st_file **files, int *n, int cap) {
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *de;
    while ((de = readdir(dp)) && *n < cap) {
        const size_t len = strlen(de->d_name);
        if (len < 13 || strcmp(de->d_name + len - 12, ".safetensors") != 0) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        sdw_error e = {0};
        if (sdw_st_open(p, &files[*n], &e) == SDW_OK) (*n)++;
    }
    closedir(dp);
}

/* The shape class of the model at path (nn/backend_cpu.h): a single file's products, or a
 * diffusers folder's denoiser's (unet/ or transformer/: what every step runs), else all its
 * components'. Unreadable files are left out: the loader reports them. */
static void model_shape_class(const char *path, sdw_shape_class *cls) {
    enum { CAP = 64 };
    sdw_st_file *files[CAP];
    int n = 0;
    struct stat st;
    *cls = (sdw_shape_class){0};
    if (!path || stat(path, &st) != 0) return;
    if (S_ISREG(st.st_mode)) {
        sdw_error e = {0};
        if (sdw_st_open(path, &files[0], &e) == SDW_OK) n = 1;
    } else if (S_ISDIR(st.st_mode)) {
        static const char *const denoisers[] = {"unet", "transformer"};
        char p[4096];
        for (size_t i = 0; i < SDW_ARRAY_LEN(denoisers) && n == 0; i++) {
            snprintf(p, sizeof p, "%s/%s", path, denoisers[i]);
            open_folder_files(p, files, &n, CAP);
        }
        DIR *dp = n == 0 ? opendir(path) : NULL;
        struct dirent *de;
        while (dp && (de = readdir(dp))) {
            if (de->d_name[0] == '.') continue;
            snprintf(p, sizeof p, "%s/%s", path, de->d_name);
            open_folder_files(p, files, &n, CAP);
        }
        if (dp) closedir(dp);
    }
    sdw_shape_class_of_files((const sdw_st_file *const *)files, n, cls);
    for (int i = 0; i < n; i++)
        sdw_st_close(files[i]);
}

sdw_status sdw_diffusion_init(sdw_diffusion *d, const sdw_image_model_ops *ops, const char *path,
                              const sdw_load_options *opts, sdw_error *err) {
    d->base.ops = ops;
    d->n_threads = opts->n_threads;
    sdw_shape_class cls = {0};
    if (opts->precision == SDW_PRECISION_AUTO) model_shape_class(path, &cls);
    d->precision = sdw_nn_precision_resolve_model(opts->precision, &cls, opts->n_threads);
    SDW_INFO("compute precision: %s (asked: %s)", sdw_precision_str(d->precision),
             sdw_precision_str(opts->precision));
    return sdw_backend_create(&d->backend, err);
}

void sdw_diffusion_weights(const sdw_diffusion *d, sdw_weights *ws) {
    sdw_weights_set_precision(ws, d->precision);
    sdw_weights_set_backend(ws, d->backend);
}

void sdw_diffusion_warn_unused(const char *what, const sdw_weights *ws) {
    char names[512];
    const int n = ws ? sdw_weights_unused(ws, names, sizeof names) : 0;
    if (n) SDW_WARN("%s: %d tensors were not used (%s)", what, n, names);
}

void sdw_diffusion_lora_part(sdw_diffusion *d, const struct sdw_lora_part *part) {
    if (!d->lora) d->lora = sdw_lora_host_create();
    sdw_lora_host_add_part(d->lora, part);
}

void sdw_diffusion_deinit(sdw_diffusion *d) {
    sdw_lora_host_destroy(d->lora); /* its packed adapters are ops on the backend */
    d->lora = NULL;
    free(d->lora_dir);
    d->lora_dir = NULL;
    sdw_taesd_destroy(d->taesd);
    sdw_weights_destroy(d->w_taesd[0]);
    sdw_weights_destroy(d->w_taesd[1]);
    d->taesd = NULL;
    d->w_taesd[0] = d->w_taesd[1] = NULL;
    sdw_backend_destroy(d->backend); /* after every op packed on it */
    d->backend = NULL;
    for (int i = 0; i < d->n_files; i++)
        sdw_st_close(d->files[i]);
    d->n_files = 0;
}

sdw_status sdw_diffusion_finish(sdw_diffusion *d, const sdw_load_options *opts, sdw_error *err) {
    int n = 0;
    for (const char *const *s = sdw_sampler_names_for(&d->sched); *s && n < 15; s++)
        d->samplers[n++] = *s;
    d->samplers[n] = NULL;
    d->caps.samplers = d->samplers;
    /* diffusers runs the scheduler class the folder ships; unknown classes fall back to the
     * first listed sampler (the family puts its reference's default first, or sets one). */
    if (!d->caps.default_sampler) d->caps.default_sampler = sdw_scheduler_config_sampler_name(&d->sched);
    if (!d->caps.default_sampler) d->caps.default_sampler = d->samplers[0];
    d->caps.strength_rounds_start = d->sched.flow_matching;
    if (d->patch < 1) d->patch = 1;
    if (d->denoiser_in_channels == 0) d->denoiser_in_channels = d->latent_channels;
    if (opts && opts->taesd) {
        sdw_status s = sdw__codec_load_taesd(d, opts->taesd, err);
        if (s) return s;
        d->caps.taesd = true;
    }
    d->caps.lora = d->lora != NULL;
    if (opts && opts->lora_dir) {
        struct stat st;
        if (stat(opts->lora_dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return sdw_error_set(err, SDW_E_NOT_FOUND, "--lora-dir %s is not a folder",
                                 opts->lora_dir);
        if (d->lora) {
            d->lora_dir = sdw_xstrdup(opts->lora_dir);
            d->caps.lora_dir = d->lora_dir;
        } else {
            SDW_WARN("this model takes no LoRAs: --lora-dir %s ignored", opts->lora_dir);
        }
    }
    return SDW_OK;
}

/* The seed a run uses: the request's, or a fresh one in A1111's 32-bit range. */
static sdw_status pick_seed(int64_t asked, int64_t *seed, sdw_error *err) {
    if (asked >= 0) {
        *seed = asked;
        return SDW_OK;
    }
    uint64_t r;
    sdw_status s = sdw_rng_random_seed(&r, err);
    if (s) return s;
    *seed = (int64_t)(r % 4294967295u);
    return SDW_OK;
}

/* The sampler of a request (diffusion.h): the model's schedule, "trailing" spacing when asked
 * (what distilled few-step models such as SDXL-Turbo ship; single files carry no scheduler
 * config), Karras sigmas when asked, and the image's token count for dynamically shifted flow
 * schedules. */
sdw_status sdw__diffusion_sampler(const sdw_diffusion *d, const sdw_request *req, int steps, int h,
                                  int w, sdw_sampler **out, sdw_error *err) {
    sdw_scheduler_config sched = d->sched;
    if (strcmp(req->scheduler, "trailing") == 0) sched.timestep_spacing = SDW_SPACING_TRAILING;
    const sdw_sampler_params p = {.steps = steps,
                                  .karras = strcmp(req->scheduler, "karras") == 0,
                                  .image_seq_len = (h / d->patch) * (w / d->patch)};
    return sdw_sampler_create(req->sampler, &sched, &p, out, err);
}

/* What the caller's stop flag asks for now (SDW_STOP_NONE without one). */
static int stop_asked(const sdw_request *req) {
    return req->stop ? atomic_load(req->stop) : SDW_STOP_NONE;
}

/* Image-to-image from given latents: the last from->steps steps of a schedule of
 * from->schedule (A1111's setup_img2img_steps with the steps given), started from the latents
 * noised to the first of them with the first draw of the pass's generator. */
static sdw_status start_from_latents(const sdw_diffusion *d, const sdw_latent_start *from,
                                     sdw_sampler *sampler, sdw_rng *rng, sdw_run *run,
                                     float *latents, int h, int w, sdw_error *err) {
    const int C = d->latent_channels;
    const size_t n_lat = (size_t)C * h * w;
    const int begin = (from->schedule - from->steps) * sdw_sampler_order(sampler);
    sdw_status s = sdw_sampler_set_begin(sampler, begin, err);
    if (s) return s;
    float *noise = sdw_xmalloc(n_lat * sizeof(float));
    sdw_rng_randn(rng, noise, n_lat);
    char name[32];
    snprintf(name, sizeof name, "noise.%02d", run->n_noise++);
    sdw_diffusion_tap(d, name, noise, 4, (int64_t)1, (int64_t)C, (int64_t)h, (int64_t)w);
    sdw_sampler_add_noise(sampler, from->latents, noise, latents, n_lat);
    free(noise);
    return SDW_OK;
}

sdw_status sdw__diffusion_pass(sdw_diffusion *d, const sdw_request *req,
                               const sdw_latent_start *from, sdw_run *run, float **out,
                               sdw_error *err) {
    sdw_status s = SDW_OK;
    const int f = d->vae_factor, C = d->latent_channels;
    const int W = req->width, H = req->height, w = W / f, h = H / f;
    const size_t n_lat = (size_t)C * h * w;
    const int Cin = d->denoiser_in_channels;
    const size_t n_in = (size_t)Cin * h * w;
    /* diffusers: do_classifier_free_guidance = guidance_scale > 1 */
    const bool cfg = d->guidance == SDW_GUIDANCE_CFG && req->guidance > 1.0f;
    const int B = cfg ? 2 : 1;
    const bool has_negative = req->negative_prompt && *req->negative_prompt;
    if (has_negative && !cfg && !from) { /* said once, by the first pass */
        if (d->guidance == SDW_GUIDANCE_CFG)
            SDW_WARN("guidance scale %g <= 1 runs no unconditional pass: the negative prompt is "
                     "ignored",
                     (double)req->guidance);
        else
            SDW_WARN("this model embeds its guidance and runs no unconditional pass: the "
                     "negative prompt is ignored");
    }

    sdw_sampler *sampler = NULL;
    void *cond = NULL;
    float *latents = sdw_xmalloc(n_lat * sizeof(float));
    float *model_in = sdw_xmalloc(B * n_in * sizeof(float));    /* NCHW, CFG batch */
    float *noise_pred = sdw_xmalloc(B * n_lat * sizeof(float)); /* NCHW */
    sdw_image_job job = {0};
    const int k0 = run->n_calls; /* calls of earlier passes: this pass's stepNN continue them */

    double t0 = sdw_time_now(), t1, t2;
    /* 1. Conditioning: the family's text encoders, batch order [uncond, cond]. */
    bool truncated = false;
    if ((s = d->hooks->condition(d, req, B, &cond, &truncated, err))) goto done;
    run->truncated |= truncated;
    if (stop_asked(req) == SDW_STOP_CANCEL) {
        s = sdw_error_set(err, SDW_CANCELLED, "cancelled at step %d (while encoding the prompt)",
                          k0);
        goto done;
    }

    t1 = sdw_time_now();
    run->seconds_encode += t1 - t0;
    /* 2. Sampler and initial latents, from a generator seeded with the run's seed (each pass
     * seeds its own, as A1111's hires pass does): one randn of the latents' shape, or the
     * init image's draws (diffusion_image.c), or the given latents noised. */
    if ((s = sdw__diffusion_sampler(d, req, from ? from->schedule : req->steps, h, w, &sampler,
                                    err)))
        goto done;
    sdw_rng rng;
    sdw_rng_init(&rng, req->rng, (uint64_t)run->seed);
    if (from) {
        if ((s = start_from_latents(d, from, sampler, &rng, run, latents, h, w, err))) goto done;
    } else if (req->init_image) { /* image-to-image / inpainting: diffusion_image.c */
        s = sdw__image_prepare(d, req, sampler, &rng, latents, &job, err);
        run->n_noise += job.n_noise;
        run->strength = job.strength;
        if (s) goto done;
        run->seconds_image_encode += sdw_time_now() - t1;
    } else {
        sdw_rng_randn(&rng, latents, n_lat);
        sdw_diffusion_tap(d, "latents_init_noise", latents, 4, (int64_t)1, (int64_t)C,
                          (int64_t)h, (int64_t)w);
        const float sigma0 = sdw_sampler_init_noise_sigma(sampler);
        for (size_t i = 0; i < n_lat; i++)
            latents[i] *= sigma0;
    }

    /* 3. Denoising loop, from the first call the strength leaves (0 for text-to-image). Stage
     * names count the calls made (stepNN of the reference's loop), over every pass. */
    t2 = sdw_time_now();
    const int n_calls = sdw_sampler_n_calls(sampler), begin = sdw_sampler_begin(sampler);
    const int total = k0 + (n_calls - begin) + run->calls_after;
    run->calls_planned += n_calls - begin;
    if (d->hooks->begin_pass && (s = d->hooks->begin_pass(d, cond, k0, n_calls - begin, err)))
        goto done;
    sdw_stop_attach((sdw_stop_ref){req->stop, SDW_STOP_INTERRUPT});
    for (int i = begin; i < n_calls; i++) {
        char name[64];
        const int k = k0 + i - begin;
        const float t = sdw_sampler_timestep(sampler, i);
        /* A stop seen inside the denoiser call leaves its output undefined: the latents keep
         * the last finished step's result, which an interrupt decodes and a cancel drops. */
        int stop = stop_asked(req);
        const double t_call = sdw_time_now();
        for (int b = 0; b < B; b++) {
            sdw_sampler_scale_model_input(sampler, i, latents, model_in + b * n_in, n_lat);
            if (Cin != C) sdw__image_denoiser_extra(&job, C, h, w, model_in + b * n_in + n_lat);
        }
        if (stop == SDW_STOP_NONE &&
            (s = d->hooks->denoise(d, cond, model_in, B, h, w, t, k, noise_pred, err)))
            goto done;
        if (k == 0) run->seconds_first_call = sdw_time_now() - t_call;
        if (stop == SDW_STOP_NONE) stop = stop_asked(req);
        if (stop == SDW_STOP_CANCEL) {
            s = sdw_error_set(err, SDW_CANCELLED, "cancelled at step %d of %d", k + 1, total);
            goto done;
        }
        if (stop != SDW_STOP_NONE) {
            run->interrupted = true;
            break;
        }
        if (cfg) { /* noise_pred = uncond + g * (cond - uncond) */
            const float g = req->guidance;
            const float *u = noise_pred, *c = noise_pred + n_lat;
            for (size_t j = 0; j < n_lat; j++)
                noise_pred[j] = u[j] + g * (c[j] - u[j]);
        }
        if ((s = sdw_sampler_step(sampler, i, noise_pred, latents, n_lat, &rng, err))) goto done;
        if (sdw_sampler_last_noise(sampler)) {
            snprintf(name, sizeof name, "noise.%02d", run->n_noise++);
            sdw_diffusion_tap(d, name, sdw_sampler_last_noise(sampler), 4, (int64_t)1,
                              (int64_t)C, (int64_t)h, (int64_t)w);
        }
        sdw__image_after_step(&job, sampler, i, latents, n_lat, (size_t)h * w);
        run->n_calls = k + 1;
        snprintf(name, sizeof name, "step%02d.latents", k);
        sdw_diffusion_tap(d, name, latents, 4, (int64_t)1, (int64_t)C, (int64_t)h, (int64_t)w);
        const sdw_image *shown = NULL;
        if (run->progress && req->preview_every > 0 &&
            ((k + 1) % req->preview_every == 0 || k + 1 == total)) {
            sdw__codec_preview(d, latents, h, w, &run->preview);
            shown = &run->preview;
        }
        if (run->progress && !run->progress(run->user, k + 1, total, shown)) {
            s = sdw_error_set(err, SDW_CANCELLED, "cancelled at step %d of %d", k + 1, total);
            goto done;
        }
    }
    run->seconds_denoise += sdw_time_now() - t2;
done:
    sdw_stop_attach((sdw_stop_ref){req->stop, SDW_STOP_CANCEL});
    if (cond && d->hooks->cond_free) d->hooks->cond_free(cond);
    sdw_sampler_destroy(sampler);
    sdw__image_job_deinit(&job);
    free(model_in);
    free(noise_pred);
    if (s) free(latents);
    else *out = latents;
    return s;
}

sdw_status sdw_diffusion_generate(sdw_image_model *base, const sdw_request *req,
                                  sdw_progress_fn progress, void *user, sdw_image *out,
                                  sdw_result_info *info, sdw_error *err) {
    sdw_diffusion *d = (sdw_diffusion *)base;
    sdw_status s = SDW_OK;
    /* The run's thread count and profile live as long as the run, on the thread running it: the
     * OpenMP thread count is a per-thread setting (the parallel regions of the ops, and
     * oneDNN's, follow the calling thread's), restored when the run ends so the caller's thread
     * keeps its own; the ops count into the profile attached to this thread (nn/profile.h). */
    const int caller_threads = omp_get_max_threads();
    if (d->n_threads > 0) omp_set_num_threads(d->n_threads);
    sdw_profile prof, *caller_prof = NULL;
    if (req->profile) {
        sdw_profile_init(&prof);
        caller_prof = sdw_profile_attach(&prof);
    }
    /* The stop flag, likewise the run's on this thread: the forwards poll it between blocks and
     * attention tiles (nn/stop.h). Only a cancel stops the encoders and the VAE (an interrupt
     * decodes the latents so far); any stop stops the denoiser (inside a pass). */
    const sdw_stop_ref caller_stop = sdw_stop_attach((sdw_stop_ref){req->stop, SDW_STOP_CANCEL});
    /* The forwards' scratch memory stays mapped from one to the next until the run ends (each
     * step would page-fault its activations in again: nn/arena.h). */
    const bool caller_keep = sdw_arena_keep(true);

    const int f = d->vae_factor;
    int W = req->width, H = req->height;
    sdw_run run = {.progress = progress, .user = user};
    sdw_lora_session lora = {0};
    bool lora_on = false;
    sdw_request rq;
    float *latents = NULL;
    bool hires = false;
    int first_calls = 0; /* the first pass's */
    double t_loop;

    if ((s = pick_seed(req->seed, &run.seed, err))) goto done;
    /* The request's LoRAs (models/lora.h), attached to this thread for the whole run (both
     * passes of the hires fix); the encoders see the prompt without its <lora:...> tags. */
    if ((s = sdw_lora_begin(d->lora, d->lora_dir, req, &lora, err))) goto done;
    lora_on = true;
    rq = *req;
    rq.prompt = lora.prompt;
    req = &rq;
    /* The hires fix's second pass counts in the progress from the first step on. */
    if (req->hires.enable && (s = sdw__hires_calls(d, req, &run.calls_after, err))) goto done;
    /* 1-3. Conditioning, initial latents, denoising (the first pass). */
    if ((s = sdw__diffusion_pass(d, req, NULL, &run, &latents, err))) goto done;
    first_calls = run.calls_planned;
    /* The hires fix (diffusion_hires.c): enlarge, then image-to-image at the second size. An
     * interrupt in the first pass skips it, as A1111's sample_hr_pass does. */
    if (req->hires.enable && !run.interrupted) {
        if ((s = sdw__hires_pass(d, req, &run, &latents, err))) goto done;
        hires = true;
        W = req->hires.width;
        H = req->hires.height;
    }

    t_loop = sdw_time_now();
    /* 4. Decode (also what an interrupt leaves: the caller asked for the image so far). A
     * cancel stops the VAE's attention; the image is then dropped. */
    if (stop_asked(req) == SDW_STOP_CANCEL) {
        s = sdw_error_set(err, SDW_CANCELLED, "cancelled before decoding");
        goto done;
    }
    bool tiled = false, taesd = false;
    if ((s = sdw__codec_decode(d, req, latents, H / f, W / f, out, &tiled, &taesd, err)))
        goto done;
    if (tiled && req->vae_tiling == SDW_TILING_AUTO)
        SDW_INFO("%dx%d is above %d pixels: decoded in tiles", W, H, SDW_TILING_AUTO_PIXELS);
    if (stop_asked(req) == SDW_STOP_CANCEL) {
        sdw_image_free(out);
        s = sdw_error_set(err, SDW_CANCELLED, "cancelled while decoding");
        goto done;
    }

    *info = (sdw_result_info){.seed = run.seed, .width = req->width, .height = req->height,
                              .steps = req->steps, .guidance = req->guidance,
                              .prompt_truncated = run.truncated,
                              .seconds_encode = run.seconds_encode,
                              .seconds_denoise = run.seconds_denoise,
                              .seconds_first_call = run.seconds_first_call,
                              .seconds_decode = sdw_time_now() - t_loop,
                              .n_denoiser_calls = run.calls_planned,
                              .strength = hires ? req->hires.strength : run.strength,
                              .seconds_image_encode = run.seconds_image_encode,
                              .guidance_embedded = d->guidance == SDW_GUIDANCE_EMBEDDED,
                              .interrupted = run.interrupted, .steps_done = run.n_calls,
                              .vae_tiled = tiled, .taesd_decoded = taesd, .hires = hires,
                              .hires_width = hires ? W : 0, .hires_height = hires ? H : 0,
                              .hires_calls = hires ? run.calls_planned - first_calls : 0};
    snprintf(info->sampler, sizeof info->sampler, "%s", req->sampler);
    snprintf(info->scheduler, sizeof info->scheduler, "%s", req->scheduler);
done:
    sdw_arena_keep(caller_keep);
    sdw_stop_attach(caller_stop);
    if (req->profile) {
        sdw_profile_attach(caller_prof);
        if (s == SDW_OK) info->n_profile = sdw_profile_export(&prof, info->profile,
                                                             SDW_PROFILE_MAX_ENTRIES);
    }
    if (d->n_threads > 0) omp_set_num_threads(caller_threads);
    if (lora_on) sdw_lora_end(&lora);
    free(latents);
    sdw_image_free(&run.preview);
    return s;
}
