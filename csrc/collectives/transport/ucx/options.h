// Settings of the ucx/ channel (CommOptions carries them; the environment only fills defaults).
// UCX's own settings (UCX_TLS, UCX_NET_DEVICES, ...) are read by UCX from the environment as the
// user set them; nothing here overrides them.
#pragma once

namespace cohort::ucx {

struct UcxOptions {};

}  // namespace cohort::ucx
