// The store's wire decoder (elastic/store/wire.h): a frame body is read field by field as the
// server reads requests and the client reads replies, with the ops' field lists; the first
// byte picks the layout. Every read is bounds-checked (ASan), a list's count cannot make it
// reserve more than the body holds, and what decodes re-encodes to the same bytes.
#include <string>
#include <vector>

#include "elastic/store/wire.h"
#include "fuzz_input.h"

using namespace cohort;
using namespace cohort::store;

namespace {

enum class Field { kU8, kU32, kU64, kString, kList, kNonce };

// The field lists of the requests (after op and request id), the replies' results and the
// handshake messages.
const std::vector<std::vector<Field>> kLayouts = {
    {},                                           // ping, num_keys (request)
    {Field::kString, Field::kString},             // set
    {Field::kString, Field::kU64},                // get
    {Field::kList, Field::kU64},                  // wait
    {Field::kString, Field::kU64},                // add (delta as u64)
    {Field::kString, Field::kString, Field::kString},  // compare_set
    {Field::kString},                             // delete, list
    {Field::kU64, Field::kU8, Field::kString},    // an error reply
    {Field::kU64, Field::kU8, Field::kList},      // a list reply
    {Field::kU8, Field::kString, Field::kU8, Field::kNonce},  // hello
    {Field::kU8, Field::kNonce, Field::kU64, Field::kU64},    // welcome
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::vector<Field>& layout = kLayouts[data[0] % kLayouts.size()];
  const std::string body = fuzz::Text(data + 1, size - 1);
  Reader reader(body);
  std::string rebuilt;
  Writer writer(&rebuilt);
  bool ok = true;
  for (Field field : layout) {
    if (!ok) break;
    switch (field) {
      case Field::kU8: {
        uint8_t value = 0;
        ok = reader.U8(&value, "u8").ok();
        if (ok) writer.U8(value);
        break;
      }
      case Field::kU32: {
        uint32_t value = 0;
        ok = reader.U32(&value, "u32").ok();
        if (ok) writer.U32(value);
        break;
      }
      case Field::kU64: {
        uint64_t value = 0;
        ok = reader.U64(&value, "u64").ok();
        if (ok) {
          writer.U64(value);
          (void)DecodeTimeout(value);
        }
        break;
      }
      case Field::kString: {
        std::string value;
        ok = reader.String(&value, "string").ok();
        if (ok) {
          writer.String(value);
          (void)QuoteKey(value);
        }
        break;
      }
      case Field::kList: {
        std::vector<std::string> list;
        ok = reader.StringList(&list, "list").ok();
        if (ok) {
          writer.StringList(list);
          (void)QuoteKeys(list);
        }
        break;
      }
      case Field::kNonce: {
        std::string value;
        ok = reader.Bytes(kNonceBytes, &value, "nonce").ok();
        if (ok) writer.Bytes(value);
        break;
      }
    }
  }
  if (ok && reader.Done().ok() && rebuilt != body) __builtin_trap();
  // Frames as a stream: a u32 length prefix, then that many bytes.
  size_t offset = 0;
  while (body.size() - offset >= kFrameHeaderBytes) {
    uint32_t length = LoadU32(body.data() + offset);
    if (body.size() - offset - kFrameHeaderBytes < length) break;
    offset += kFrameHeaderBytes + length;
  }
  return 0;
}
