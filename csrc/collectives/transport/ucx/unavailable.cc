// The UCX channel in a build without UCX (libucx-dev was not found when cmake ran): the kind
// exists, and asking for it says why it cannot serve.
#include "absl/status/status.h"
#include "collectives/transport/ucx/channel.h"

namespace cohort::ucx {

bool Built() { return false; }

absl::StatusOr<std::unique_ptr<UcxChannel>> UcxChannel::Create(const ChannelSetup& setup,
                                                               const UcxOptions& options) {
  (void)setup;
  (void)options;
  return absl::UnimplementedError(
      "this build has no UCX (libucx-dev was not found when cohort was configured); install "
      "UCX (scripts/bootstrap does) and rebuild, or leave ucx out of COHORT_TRANSPORTS");
}

}  // namespace cohort::ucx
