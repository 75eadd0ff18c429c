/* models/lora.h — LoRA files on a model's layers, per request: the two file formats people
 * have (kohya-ss / AUTOMATIC1111 and diffusers / PEFT), their modules matched to the layers a
 * family declares adaptable, packed once per file and applied on the fly for a run (nn/lora.h).
 *
 *   // the family, after binding (before sdw_diffusion_finish):
 *   sdw_diffusion_lora_part(&m->d, &(sdw_lora_part){"unet", {"unet"}, {"lora_unet"}, m->w_unet,
 *                                                   sdw_ldm_unet_alias, &m->unet_cfg});
 *   // the generation core, around each run (models/diffusion.c):
 *   sdw_lora_session s;
 *   if (sdw_lora_begin(host, lora_dir, req, &s, &err)) goto fail; // s.prompt: tags removed
 *   ... condition with s.prompt, denoise ...
 *   sdw_lora_end(&s);
 *
 * Formats, by tensor name (a module is a name with its down / up / optional mid and alpha):
 *   kohya / A1111   lora_unet_<layer path, . -> _>.lora_down.weight / .lora_up.weight / .alpha,
 *                   lora_te_ (lora_te1_, lora_te2_ for SDXL's two text encoders); conv layers
 *                   (LoCon) with down [r, in, k, k] and up [out, r, 1, 1]; .lora_mid.weight
 *                   [r, r, k, k] between a 1x1 down and up (composed into a k x k down);
 *   diffusers/PEFT  unet.<layer path>.lora_A.weight / .lora_B.weight (text_encoder., text_encoder_2.,
 *                   transformer.), optional .alpha; also diffusers' older .lora.down / .lora.up,
 *                   .lora_linear_layer.down / .up and attention-processor names
 *                   (attn1.processor.to_q_lora.down.weight).
 * The layer path is the canonical (diffusers) name, or one of the family's aliases (SDXL kohya
 * files use SGM UNet names, input_blocks_4_1_...; FLUX files BFL names, double_blocks_0_img_attn_qkv,
 * whose fused rows are split over the canonical layers they stack). Scale: alpha / rank (alpha
 * absent or 0: 1), times the request's multiplier: W + m·(alpha/r)·up·down, as diffusers.
 *
 * Errors: an unreadable or corrupt file, a tensor that is no LoRA tensor (LoHa / LoKr / DoRA
 * included), a module missing its down or up, shapes that contradict each other, and a module
 * whose layer has another shape (a LoRA for another architecture) each fail the request with a
 * message naming the file and the module; the model is untouched (nothing of it changes, ever).
 * A module whose name matches no layer is skipped with a warning (the reference tools do the
 * same), unless no module matches at all.
 *
 * Thread safety: a host is used by one run at a time (the model's contract); the file loading
 * functions are reentrant.
 */
#ifndef SDW_MODELS_LORA_H
#define SDW_MODELS_LORA_H

#include "sdw/image_model.h"
#include "sdw/lora.h"

#include "models/lora_file.h"
#include "nn/lora.h"

/* ---- a model's LoRA host: its adaptable parts and the packed files ---- */

typedef struct sdw_lora_host sdw_lora_host;

sdw_lora_host *sdw_lora_host_create(void);
/* Adds part (copied; its strings and ws borrowed for the host's life). After the part's layers
 * are bound. */
void sdw_lora_host_add_part(sdw_lora_host *h, const sdw_lora_part *part);
/* Frees the packed files (their backend ops): call before the model's backend goes. NULL ok. */
void sdw_lora_host_destroy(sdw_lora_host *h);

/* Matches f's modules to h's layers and packs them (the pack is new: sdw_lora_pack_destroy).
 * label names the file in messages. The path sdw_lora_begin takes for each file not cached. */
sdw_status sdw_lora_host_pack(sdw_lora_host *h, const sdw_lora_file *f, const char *label,
                              sdw_lora_pack **out, sdw_error *err);

/* Files a host keeps packed between requests (by path, size and modification time; the least
 * recently used goes first), and the packed bytes they may hold together (the files of one
 * request are kept whatever their size). */
#define SDW_LORA_CACHE_FILES 8
#define SDW_LORA_CACHE_BYTES ((size_t)2 << 30)
/* LoRAs one request may apply (its list and its prompt's tags together). */
#define SDW_LORA_MAX_PER_REQUEST 16

/* One run's LoRAs, attached to the running thread between begin and end. */
typedef struct sdw_lora_session {
    const char *prompt; /* req's prompt without its <lora:...> tags (owned here or req's) */
    char *prompt_own;
    sdw_lora_use use[SDW_LORA_MAX_PER_REQUEST];
    sdw_lora_run run;
    const sdw_lora_run *prev; /* what was attached before */
    bool attached;
    int n_layers; /* adapted ops, summed over the files */
} sdw_lora_session;

/* Collects req's LoRAs (req->loras, then the prompt's <lora:NAME[:M]> tags, NAME resolved in
 * lora_dir), loads and packs the files not cached in h (h may be NULL for a model without
 * LoRA support: any LoRA is then SDW_E_UNSUPPORTED), and attaches them to the calling thread.
 * On failure nothing is attached and s needs no end; on success call sdw_lora_end after the
 * run (s->prompt is valid until then). */
sdw_status sdw_lora_begin(sdw_lora_host *h, const char *lora_dir, const sdw_request *req,
                          sdw_lora_session *s, sdw_error *err);
void sdw_lora_end(sdw_lora_session *s);

/* sdw_request_resolve's check of req's LoRAs against caps, so a bad one fails before a job is
 * queued: the list well formed (a name or a path each, multipliers finite and in range, at
 * most SDW_LORA_MAX_PER_REQUEST with the tags), the prompt's tags well formed, every name
 * resolving in caps->lora_dir and every path a file; any LoRA on a model without caps.lora is
 * SDW_E_UNSUPPORTED. The files are not read here (sdw_lora_begin does). */
sdw_status sdw_lora_check_request(const sdw_request *req, const sdw_capabilities *caps,
                                  sdw_error *err);

#endif
