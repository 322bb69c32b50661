// Runs the fuzz target without libFuzzer: over hand-made seeds, then N deterministic
// mutations of them (bit flips, byte sets, truncations, length-prefix edits). Used as a
// ctest on compilers without -fsanitize=fuzzer; scripts/fuzz.sh runs the real fuzzer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {
std::string file(const std::string& header, size_t data_bytes) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + std::string(data_bytes, '\x5a');
}
}  // namespace

int main(int argc, char** argv) {
    long iterations = argc > 1 ? std::atol(argv[1]) : 10000;
    std::vector<std::string> seeds = {
        file(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]}})", 22),
        file(R"({"x":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})", 8),
        file(R"({"e":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})", 0),
        file("{}", 0),
        std::string("\x02\x00\x00\x00\x00\x00\x00\x00{}", 10),
    };
    std::mt19937_64 rng(12345);
    long runs = 0;
    for (const auto& s : seeds) {
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
        ++runs;
    }
    for (long i = 0; i < iterations; ++i) {
        std::string s = seeds[rng() % seeds.size()];
        int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits && !s.empty(); ++e) {
            size_t pos = rng() % s.size();
            switch (rng() % 6) {
                case 0: s[pos] = static_cast<char>(s[pos] ^ (1 << (rng() % 8))); break;
                case 1: s[pos] = "0123456789[]{},:\"-eE"[rng() % 20]; break;
                case 2: s.resize(pos); break;
                case 3: s[rng() % std::min<size_t>(8, s.size())] = static_cast<char>(rng() & 0xff); break;
                case 4: s.insert(pos, 1, static_cast<char>(rng() & 0xff)); break;
                case 5: s.erase(pos, 1 + rng() % 4); break;
            }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
        ++runs;
    }
    std::printf("%ld inputs, no crash\n", runs);
    return 0;
}
