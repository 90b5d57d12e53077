// The little cryptography the handshakes need: random nonces and HMAC-SHA256 proofs of the
// job's secret token (OpenSSL's libcrypto). Used by the store and the transports.
#pragma once

#include <string>

namespace cohort::crypto {

// `length` bytes from the system's CSPRNG.
std::string RandomBytes(size_t length);
// Hex text of RandomBytes(length).
std::string RandomHex(size_t length);
// HMAC-SHA256(key, message), 32 raw bytes.
std::string HmacSha256(const std::string& key, const std::string& message);
bool ConstantTimeEquals(const std::string& a, const std::string& b);

}  // namespace cohort::crypto
