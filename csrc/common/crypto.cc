#include "common/crypto.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/random.h>

#include <stdexcept>

#include "absl/strings/escaping.h"

namespace cohort::crypto {

std::string RandomBytes(size_t length) {
  std::string out(length, '\0');
  size_t filled = 0;
  while (filled < length) {
    ssize_t got = getrandom(out.data() + filled, length - filled, 0);
    if (got > 0) filled += static_cast<size_t>(got);
  }
  return out;
}

std::string RandomHex(size_t length) { return absl::BytesToHexString(RandomBytes(length)); }

std::string HmacSha256(const std::string& key, const std::string& message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest,
       &digest_length);
  return std::string(reinterpret_cast<char*>(digest), digest_length);
}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cohort::crypto
