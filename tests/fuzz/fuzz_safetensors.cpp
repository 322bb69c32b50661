// libFuzzer target: the safetensors header parser must reject any byte string with
// a FormatError, never crash, hang or read outside the buffer (ASan checks the last).
#include "pdsd/core/error.h"
#include "pdsd/core/safetensors.h"

#include <cstdint>
#include <cstring>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Copy into an exact-size heap buffer so ASan sees any read past the end.
    std::vector<uint8_t> buf(data, data + size);
    try {
        auto h = pdsd::parse_safetensors_header(buf.data(), buf.size(), "fuzz");
        // Everything the parser accepted must lie inside the buffer.
        for (const auto& t : h.tensors) {
            if (h.data_start + t.end > buf.size() || t.begin > t.end) __builtin_trap();
            volatile uint8_t sink = 0;
            if (t.nbytes() > 0) sink = buf[h.data_start + t.end - 1];
            (void)sink;
        }
    } catch (const pdsd::FormatError&) {
    }
    return 0;
}
