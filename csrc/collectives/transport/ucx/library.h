// UCX, loaded when a UCX channel is first made (dlopen of libucp), not linked into libcohort.
// Linking it would put UCX's memory hooks (libucm intercepts mmap, munmap, brk in the whole
// process from the moment it is loaded) under every program that uses cohort, UCX or not, and
// a process that forks while one of its threads is inside such a hooked call hands its child a
// lock that UCX's set-up then waits on forever (UCX 1.13). Loaded on demand, UCX is only in the
// processes that use it; a host without libucx at run time gets an error naming it instead of a
// program that does not start. Internal to transport/ucx/.
#pragma once

#include <ucm/api/ucm.h>
#include <ucp/api/ucp.h>

#include "absl/status/statusor.h"

namespace cohort::ucx {

// The UCX functions the channel calls, by name.
#define COHORT_UCX_FUNCTIONS(X)                                                               \
  X(ucp_config_read) X(ucp_config_modify) X(ucp_config_release) X(ucp_init_version)            \
  X(ucp_cleanup) X(ucp_context_print_info) X(ucp_worker_create) X(ucp_worker_destroy)         \
  X(ucp_worker_get_efd) X(ucp_worker_get_address) X(ucp_worker_release_address)               \
  X(ucp_worker_query) X(ucp_worker_progress) X(ucp_worker_arm) X(ucp_worker_signal)           \
  X(ucp_worker_set_am_recv_handler) X(ucp_ep_create) X(ucp_ep_close_nbx) X(ucp_ep_flush_nbx)  \
  X(ucp_ep_print_info) X(ucp_am_send_nbx) X(ucp_am_recv_data_nbx) X(ucp_am_data_release)      \
  X(ucp_request_check_status) X(ucp_request_free) X(ucs_status_string) X(ucp_mem_map)            \
  X(ucp_mem_unmap) X(ucp_mem_query) X(ucp_rkey_pack) X(ucp_rkey_buffer_release)               \
  X(ucp_ep_rkey_unpack) X(ucp_rkey_destroy) X(ucp_put_nbx) X(ucp_atomic_op_nbx)               \
  X(ucp_worker_fence)
// UCX's memory hooks (libucm, a dependency of libucp): optional, for invalidating registrations
// of memory that is unmapped.
#define COHORT_UCM_FUNCTIONS(X) X(ucm_set_event_handler) X(ucm_unset_event_handler)

struct Library {
#define COHORT_UCX_DECLARE(name) decltype(&::name) name = nullptr;
  COHORT_UCX_FUNCTIONS(COHORT_UCX_DECLARE)
  COHORT_UCM_FUNCTIONS(COHORT_UCX_DECLARE)
#undef COHORT_UCX_DECLARE
  // UCM's settings (UCX_MEM_*), to tell whether its memory events are on; null if not found.
  const ucm_global_config_t* ucm_options = nullptr;
  // ucp_init is an inline over ucp_init_version with the API version of these headers.
  ucs_status_t init(const ucp_params_t* params, const ucp_config_t* config,
                    ucp_context_h* context) const {
    return ucp_init_version(UCP_API_MAJOR, UCP_API_MINOR, params, config, context);
  }
};

// Loads UCX once per process (thread-safe); later calls return the same table or error.
absl::StatusOr<const Library*> LoadLibrary();
// The loaded table; only after LoadLibrary succeeded.
const Library& Ucx();

}  // namespace cohort::ucx
