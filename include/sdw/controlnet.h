/* sdw/controlnet.h — the ControlNets of a ControlNet folder (sdw_load_options.controlnet_dir,
 * `--controlnet-dir DIR`) and how requests name them (sdw_control.name).
 *
 *   sdw_controlnet_entry *list; int n;
 *   if (sdw_controlnet_list("controlnets", &list, &n, &err) == SDW_OK) {  // model_list
 *       for (int i = 0; i < n; i++) printf("%s  %s\n", list[i].name, list[i].path);
 *       sdw_controlnet_list_free(list, n);
 *   }
 *   char *path;
 *   if (sdw_controlnet_resolve("controlnets", "canny", &path, &err) == SDW_OK) ... free(path);
 *
 * A ControlNet is a diffusers ControlNetModel folder (config.json and its
 * diffusion_pytorch_model[.fp16].safetensors) or a single .safetensors file in the original
 * lllyasviel naming (control_v11p_sd15_canny.safetensors). It is named by the folder's name or
 * the file's stem ("canny" for DIR/canny/ or DIR/canny.safetensors), or by its path relative to
 * the folder ("sd15/canny"). AUTOMATIC1111's clients send names with a hash after them
 * ("control_v11p_sd15_canny [d14c016b]"): a trailing " [...]" is ignored. A name never leads
 * outside the folder: absolute names, "." / ".." components and symlinks resolving outside it
 * are refused. Pickled .pth / .ckpt files are never loaded.
 * Thread safety: every function is reentrant (the folder is read each call).
 */
#ifndef SDW_CONTROLNET_H
#define SDW_CONTROLNET_H

#include "sdw/status.h"

typedef struct sdw_controlnet_entry {
    char *name; /* the folder's name or file's stem: what sdw_control.name takes (owned) */
    char *path; /* relative to the folder: "sd15/canny" or "canny.safetensors" (owned) */
} sdw_controlnet_entry;

/* The ControlNets under dir, subfolders included (hidden entries skipped; a symlink counts when
 * it resolves inside dir), sorted by path: folders whose config.json is a ControlNetModel's and
 * .safetensors files in the original layout. A folder holding a config.json is not searched
 * further. On success *out is a new array of *n entries (free with
 * sdw_controlnet_list_free; NULL when empty); on failure (dir is not a readable folder) both are
 * untouched. */
sdw_status sdw_controlnet_list(const char *dir, sdw_controlnet_entry **out, int *n,
                               sdw_error *err);
void sdw_controlnet_list_free(sdw_controlnet_entry *list, int n); /* NULL ok */

/* The ControlNet `name` means in dir (see above): DIR/name (a ControlNet folder or a
 * .safetensors file), DIR/name.safetensors, else a folder or file of that name in a subfolder
 * (two of them: SDW_E_INVALID_ARG naming both). On success *path is a new string (free()): the
 * real path of the folder or file. SDW_E_NOT_FOUND when nothing answers, SDW_E_INVALID_ARG
 * for a name that would leave dir or no folder configured (dir NULL); *path untouched then. */
sdw_status sdw_controlnet_resolve(const char *dir, const char *name, char **path,
                                  sdw_error *err);

#endif
