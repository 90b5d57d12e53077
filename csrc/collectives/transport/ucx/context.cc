#include "collectives/transport/ucx/context.h"

#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status.h"

namespace cohort::ucx {
namespace {

bool Unset(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr || *value == '\0';
}

// Whether UCX_TLS lets UCX use a shared-memory transport (only then is the shared-memory error
// handling setting worth applying: UCX warns about settings no transport took).
bool TlsMayUseSharedMemory() {
  const char* tls = std::getenv("UCX_TLS");
  if (tls == nullptr || *tls == '\0' || tls[0] == '^') return true;
  for (absl::string_view name : absl::StrSplit(tls, ',', absl::SkipWhitespace())) {
    name = name.substr(0, name.find(':'));  // "posix:aux"
    if (name == "all" || name == "sm" || name == "shm" || name == "mm" || name == "posix" ||
        name == "sysv" || name == "xpmem") {
      return true;
    }
  }
  return false;
}

// The text ucp_*_print_info writes.
template <typename Print>
std::string Printed(Print print) {
  char* text = nullptr;
  size_t length = 0;
  FILE* stream = open_memstream(&text, &length);
  if (stream == nullptr) return "";
  print(stream);
  fclose(stream);
  std::string result(text, length);
  free(text);
  return result;
}

// The resource lines of ucp_context_print_info ("# resource 0 : md 0 dev 0 flags -- tcp/lo"),
// as "tl/device" names. This is the context's own list, after UCX_TLS and UCX_NET_DEVICES.
std::vector<std::string> Resources(ucp_context_h context) {
  const std::string text = Printed([&](FILE* stream) { Ucx().ucp_context_print_info(context, stream); });
  std::vector<std::string> resources;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StrContains(line, "resource") || !absl::StrContains(line, "--")) continue;
    absl::string_view name = line.substr(line.rfind("--") + 2);
    name = absl::StripAsciiWhitespace(name);
    if (!name.empty()) resources.emplace_back(name);
  }
  return resources;
}

// rc_verbs, rc_mlx5, dc_mlx5, ud_verbs, ud_mlx5: UCX lists them only for active ports.
bool IsRdmaTransport(absl::string_view resource) {
  return absl::StartsWith(resource, "rc") || absl::StartsWith(resource, "dc") ||
         absl::StartsWith(resource, "ud");
}

}  // namespace

bool Built() { return true; }

std::string UcxTlsText() {
  const char* tls = std::getenv("UCX_TLS");
  return tls == nullptr ? std::string("UCX_TLS unset") : absl::StrCat("UCX_TLS=", tls);
}

std::string UcxStatusText(ucs_status_t status) { return Ucx().ucs_status_string(status); }

// From ucp_ep_print_info's "lane[0]:  0:sysv/memory.0 md[0] -> ..." lines.
std::string EndpointTransports(ucp_ep_h ep) {
  const std::string text = Printed([&](FILE* stream) { Ucx().ucp_ep_print_info(ep, stream); });
  std::vector<std::string> lanes;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    size_t at = line.find("lane[");
    if (at == absl::string_view::npos) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line.substr(at), ' ', absl::SkipWhitespace());
    if (fields.size() < 2) continue;
    absl::string_view resource = fields[1];  // "0:sysv/memory.0"
    resource = resource.substr(resource.find(':') + 1);
    resource = resource.substr(0, resource.rfind('.'));
    std::string name(resource);
    if (std::find(lanes.begin(), lanes.end(), name) == lanes.end()) lanes.push_back(name);
  }
  return lanes.empty() ? "?" : absl::StrJoin(lanes, ", ");
}

absl::StatusOr<std::unique_ptr<Context>> Context::Create(const UcxOptions& options,
                                                         int estimated_peers) {
  COHORT_RETURN_IF_ERROR(LoadLibrary().status());
  std::unique_ptr<Context> result(new Context());
  ucp_config_t* config = nullptr;
  ucs_status_t status = Ucx().ucp_config_read(nullptr, nullptr, &config);
  if (status != UCS_OK) {
    return absl::InvalidArgumentError(absl::StrCat(
        "UCX could not read its configuration (UCX_* variables): ", UcxStatusText(status),
        "; check the UCX_* variables in the environment (ucx_info -c lists them)"));
  }
  // Per-context settings, each only where the user did not set the UCX variable itself.
  if (options.keepalive_interval > absl::ZeroDuration() && Unset("UCX_KEEPALIVE_INTERVAL")) {
    std::string value =
        absl::StrCat(absl::ToInt64Microseconds(options.keepalive_interval), "us");
    status = Ucx().ucp_config_modify(config, "KEEPALIVE_INTERVAL", value.c_str());
    if (status != UCS_OK) {
      COHORT_LOG(WARN) << "UCX did not take KEEPALIVE_INTERVAL=" << value << ": "
                       << UcxStatusText(status);
    }
  }
  if (options.shared_memory_error_handling && Unset("UCX_MM_ERROR_HANDLING") &&
      Unset("UCX_POSIX_ERROR_HANDLING") && Unset("UCX_SYSV_ERROR_HANDLING") &&
      Unset("UCX_XPMEM_ERROR_HANDLING") && TlsMayUseSharedMemory()) {
    status = Ucx().ucp_config_modify(config, "MM_ERROR_HANDLING", "y");
    if (status != UCS_OK) {
      COHORT_LOG(WARN) << "UCX did not take MM_ERROR_HANDLING=y: " << UcxStatusText(status);
    }
  }

  ucp_params_t params = {};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS |
                      UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_AMO64 | UCP_FEATURE_WAKEUP;
  params.estimated_num_eps = static_cast<size_t>(estimated_peers > 0 ? estimated_peers : 1);
  params.mt_workers_shared = 0;
  params.name = "cohort";
  status = Ucx().init(&params, config, &result->context_);
  Ucx().ucp_config_release(config);
  if (status != UCS_OK) {
    result->context_ = nullptr;
    return absl::UnavailableError(absl::StrCat(
        "UCX could not start (ucp_init: ", UcxStatusText(status), ") with ", UcxTlsText(),
        "; `ucx_info -d` lists the transports UCX finds on this host"));
  }

  ucp_worker_params_t worker_params = {};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // One thread at a time (the communicator's executing thread), not always the same one.
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  status = Ucx().ucp_worker_create(result->context_, &worker_params, &result->worker_);
  if (status != UCS_OK) {
    result->worker_ = nullptr;
    return absl::UnavailableError(absl::StrCat("UCX could not create a worker (",
                                               UcxStatusText(status), ") with ", UcxTlsText()));
  }
  status = Ucx().ucp_worker_get_efd(result->worker_, &result->event_fd_);
  if (status != UCS_OK) {
    return absl::UnavailableError(absl::StrCat(
        "UCX has no wake-up event descriptor for its worker (", UcxStatusText(status), ") with ",
        UcxTlsText(), "; every transport UCX uses must support wake-up events"));
  }
  ucp_address_t* address = nullptr;
  size_t address_length = 0;
  status = Ucx().ucp_worker_get_address(result->worker_, &address, &address_length);
  if (status != UCS_OK) {
    return absl::UnavailableError(
        absl::StrCat("UCX could not tell its worker address: ", UcxStatusText(status)));
  }
  result->address_.assign(reinterpret_cast<const char*>(address), address_length);
  Ucx().ucp_worker_release_address(result->worker_, address);

  ucp_worker_attr_t attributes = {};
  attributes.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  status = Ucx().ucp_worker_query(result->worker_, &attributes);
  result->max_am_header_ = status == UCS_OK ? attributes.max_am_header : 0;

  std::vector<std::string> resources = Resources(result->context_);
  for (const std::string& resource : resources) {
    if (IsRdmaTransport(resource)) result->rdma_ = true;
  }
  result->transports_ = resources.empty() ? "?" : absl::StrJoin(resources, ", ");
  COHORT_LOG(DEBUG) << "UCX context (" << UcxTlsText() << "): " << result->transports_
                    << (result->rdma_ ? " (RDMA)" : " (no RDMA)");
  return result;
}

Context::~Context() {
  if (worker_ != nullptr) Ucx().ucp_worker_destroy(worker_);
  if (context_ != nullptr) Ucx().ucp_cleanup(context_);
}

}  // namespace cohort::ucx
