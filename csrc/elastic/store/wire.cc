#include "elastic/store/wire.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/crypto.h"

namespace cohort::store {

const char* OpName(Op op) {
  switch (op) {
    case Op::kPing:
      return "ping";
    case Op::kSet:
      return "set";
    case Op::kGet:
      return "get";
    case Op::kWait:
      return "wait";
    case Op::kAdd:
      return "add";
    case Op::kCompareSet:
      return "compare_set";
    case Op::kDelete:
      return "delete";
    case Op::kList:
      return "list";
    case Op::kNumKeys:
      return "num_keys";
    case Op::kChanges:
      return "changes";
  }
  return "unknown";
}

std::string HandshakeProof(const std::string& token, absl::string_view role,
                           const std::string& job_id, const std::string& client_nonce,
                           const std::string& server_nonce) {
  std::string message;
  Writer writer(&message);
  writer.String("cohort-store");
  writer.String(role);
  writer.String(job_id);
  writer.String(client_nonce);
  writer.String(server_nonce);
  return crypto::HmacSha256(token, message);
}

std::string KeyTooLargeMessage(size_t key_bytes, int64_t limit) {
  return absl::StrCat("key of ", key_bytes, " bytes is larger than the store's limit of ", limit,
                      " bytes; use a shorter key or raise COHORT_STORE_MAX_KEY_BYTES where the "
                      "store server runs");
}

std::string ValueTooLargeMessage(size_t value_bytes, int64_t limit) {
  return absl::StrCat("value of ", value_bytes, " bytes is larger than the store's limit of ",
                      limit,
                      " bytes; store less or raise COHORT_STORE_MAX_VALUE_BYTES where the store "
                      "server runs");
}

uint64_t EncodeTimeout(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return kNoTimeout;
  if (timeout <= absl::ZeroDuration()) return 0;
  int64_t millis = absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  return static_cast<uint64_t>(millis);
}

absl::Duration DecodeTimeout(uint64_t millis) {
  // Anything beyond a century is as good as infinite and would overflow the clock arithmetic.
  constexpr uint64_t kCenturyMillis = uint64_t{100} * 365 * 24 * 3600 * 1000;
  if (millis == kNoTimeout || millis > kCenturyMillis) return absl::InfiniteDuration();
  return absl::Milliseconds(static_cast<int64_t>(millis));
}

uint32_t LoadU32(const char* bytes) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes);
  return (uint32_t{data[0]} << 24) | (uint32_t{data[1]} << 16) | (uint32_t{data[2]} << 8) |
         uint32_t{data[3]};
}

void Writer::BeginFrame() {
  frame_start_ = out_->size();
  U32(0);
}

void Writer::EndFrame() {
  size_t length = out_->size() - frame_start_ - kFrameHeaderBytes;
  for (int i = 0; i < 4; ++i) {
    (*out_)[frame_start_ + i] = static_cast<char>((length >> (24 - 8 * i)) & 0xff);
  }
}

void Writer::U32(uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out_->push_back(static_cast<char>(value >> shift));
}

void Writer::U64(uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out_->push_back(static_cast<char>(value >> shift));
}

void Writer::String(absl::string_view text) {
  U32(static_cast<uint32_t>(text.size()));
  out_->append(text.data(), text.size());
}

void Writer::StringList(const std::vector<std::string>& list) {
  U32(static_cast<uint32_t>(list.size()));
  for (const std::string& item : list) String(item);
}

std::string QuoteKey(absl::string_view key) {
  constexpr size_t kShown = 120;
  if (key.size() <= kShown) return absl::StrCat("\"", absl::CHexEscape(key), "\"");
  return absl::StrCat("\"", absl::CHexEscape(key.substr(0, kShown)), "...\" (", key.size(),
                      " bytes)");
}

std::string QuoteKeys(const std::vector<std::string>& keys, size_t limit) {
  std::string text;
  for (size_t i = 0; i < keys.size() && i < limit; ++i) {
    if (i > 0) text += ", ";
    text += QuoteKey(keys[i]);
  }
  if (keys.size() > limit) absl::StrAppend(&text, " and ", keys.size() - limit, " more");
  return text;
}

namespace {

absl::Status Truncated(const char* field) {
  return absl::DataLossError(absl::StrCat("malformed message: it ends inside field '", field, "'"));
}

}  // namespace

absl::Status Reader::U8(uint8_t* value, const char* field) {
  if (remaining() < 1) return Truncated(field);
  *value = static_cast<uint8_t>(data_[offset_++]);
  return absl::OkStatus();
}

absl::Status Reader::U32(uint32_t* value, const char* field) {
  if (remaining() < 4) return Truncated(field);
  *value = LoadU32(data_.data() + offset_);
  offset_ += 4;
  return absl::OkStatus();
}

absl::Status Reader::U64(uint64_t* value, const char* field) {
  if (remaining() < 8) return Truncated(field);
  uint64_t result = 0;
  for (int i = 0; i < 8; ++i) {
    result = (result << 8) | static_cast<unsigned char>(data_[offset_ + i]);
  }
  offset_ += 8;
  *value = result;
  return absl::OkStatus();
}

absl::Status Reader::I64(int64_t* value, const char* field) {
  uint64_t raw = 0;
  absl::Status status = U64(&raw, field);
  *value = static_cast<int64_t>(raw);
  return status;
}

absl::Status Reader::Bytes(size_t length, std::string* value, const char* field) {
  if (remaining() < length) return Truncated(field);
  value->assign(data_.data() + offset_, length);
  offset_ += length;
  return absl::OkStatus();
}

absl::Status Reader::String(std::string* value, const char* field) {
  uint32_t length = 0;
  absl::Status status = U32(&length, field);
  if (!status.ok()) return status;
  return Bytes(length, value, field);
}

absl::Status Reader::StringList(std::vector<std::string>* list, const char* field) {
  uint32_t count = 0;
  absl::Status status = U32(&count, field);
  if (!status.ok()) return status;
  // Each string needs at least its 4-byte length, which bounds a hostile count.
  if (count > remaining() / 4) return Truncated(field);
  list->clear();
  list->reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    std::string item;
    status = String(&item, field);
    if (!status.ok()) return status;
    list->push_back(std::move(item));
  }
  return absl::OkStatus();
}

absl::Status Reader::Done() const {
  if (remaining() != 0) {
    return absl::DataLossError(
        absl::StrCat("malformed message: ", remaining(), " unexpected bytes at its end"));
  }
  return absl::OkStatus();
}

}  // namespace cohort::store
