#include "collectives/transport/ucx/library.h"

#include <dlfcn.h>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"

#ifndef COHORT_UCX_LIBRARY
#define COHORT_UCX_LIBRARY "libucp.so.0"
#endif

namespace cohort::ucx {
namespace {

Library library;
absl::Status load_status;
absl::once_flag loaded;

void Load() {
  // RTLD_LOCAL: UCX's symbols stay out of the process's global namespace.
  void* handle = dlopen(COHORT_UCX_LIBRARY, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    load_status = absl::UnavailableError(absl::StrCat(
        "UCX is not installed on this host (", why != nullptr ? why : COHORT_UCX_LIBRARY,
        "); install libucx0 (Debian) or put UCX's lib directory on LD_LIBRARY_PATH, or leave ucx "
        "out of COHORT_TRANSPORTS"));
    return;
  }
  // dlsym on the handle also searches libucp's dependencies (ucs_status_string is libucs').
#define COHORT_UCX_RESOLVE(name)                                                          \
  library.name = reinterpret_cast<decltype(library.name)>(dlsym(handle, #name));          \
  if (library.name == nullptr) {                                                          \
    load_status = absl::UnavailableError(absl::StrCat(                                    \
        COHORT_UCX_LIBRARY " has no " #name "; cohort needs UCX 1.12 or later (found ",   \
        "an older or incomplete UCX)"));                                                  \
    return;                                                                               \
  }
  COHORT_UCX_FUNCTIONS(COHORT_UCX_RESOLVE)
#undef COHORT_UCX_RESOLVE
#define COHORT_UCM_RESOLVE(name) \
  library.name = reinterpret_cast<decltype(library.name)>(dlsym(handle, #name));
  COHORT_UCM_FUNCTIONS(COHORT_UCM_RESOLVE)
#undef COHORT_UCM_RESOLVE
  library.ucm_options =
      static_cast<const ucm_global_config_t*>(dlsym(handle, "ucm_global_opts"));
  // The handle stays open for the life of the process: UCX keeps threads and hooks.
}

}  // namespace

absl::StatusOr<const Library*> LoadLibrary() {
  absl::call_once(loaded, &Load);
  if (!load_status.ok()) return load_status;
  return &library;
}

const Library& Ucx() { return library; }

}  // namespace cohort::ucx
