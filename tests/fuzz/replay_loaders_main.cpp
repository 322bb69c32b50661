// Runs fuzz_loaders without libFuzzer (ctest on gcc): hand-made seeds for each reader
// (first byte: 0 JSON + records, 1 docx XML, 2 HTML, 3 CSV, 4 kb .json, 5 kb .jsonl), then
// N deterministic mutations, some of which repeat a bracket or tag thousands of times.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
    long iterations = argc > 1 ? std::atol(argv[1]) : 10000;
    const std::string w = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";
    std::vector<std::string> seeds = {
        std::string(1, '\0') + R"({"instruction": "a", "input": "b", "output": "c", "history": [["q", "r"]]})",
        std::string(1, '\0') + R"({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "tools": "[{\"name\": \"f\"}]"})",
        std::string(1, '\1') + "<w:document " + w + "><w:body><w:p><w:r><w:t>a &amp; b</w:t><w:tab/></w:r></w:p>"
            "<w:tbl><w:tr><w:tc><w:p><w:r><w:t>c</w:t></w:r></w:p></w:tc></w:tr></w:tbl></w:body></w:document>",
        std::string(1, '\1') + "<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY a \"x\">]><w:document " + w + ">&a;</w:document>",
        std::string(1, '\2') + "<html><script>x</script><p>a &lt;b&gt; &#x4E2D; &nbsp;</p><!-- c --><td>d</td></html>",
        std::string(1, '\3') + "a,b,\"c\"\"d\"\n1,2,3\n\"x\ny\",,\n",
        std::string(1, '\4') + R"({"a": [1, 2.5, "s", null, true, {"b": {"c": []}}]})",
        std::string(1, '\5') + "{\"a\": 1}\n\n[\"b\"]\n",
    };
    const char* bursts[] = {"[", "{\"a\":", "<w:p>", "&", "<script>", "\"", ","};
    std::mt19937_64 rng(20261203);
    long runs = 0;
    for (const auto& s : seeds) {
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
        ++runs;
    }
    for (long i = 0; i < iterations; ++i) {
        std::string s = seeds[rng() % seeds.size()];
        int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits && s.size() > 1; ++e) {
            size_t pos = 1 + rng() % (s.size() - 1);
            switch (rng() % 7) {
                case 0: s[pos] = static_cast<char>(s[pos] ^ (1 << (rng() % 8))); break;
                case 1: s[pos] = "[]{},:\"<>/&;\n\\"[rng() % 14]; break;
                case 2: s.resize(pos); break;
                case 3: s.insert(pos, 1, static_cast<char>(rng() & 0xff)); break;
                case 4: s.erase(pos, 1 + rng() % 4); break;
                case 5: {   // a burst: nesting or repetition far past any real file
                    std::string b = bursts[rng() % (sizeof bursts / sizeof *bursts)];
                    size_t n = 1 + rng() % 3000;
                    std::string rep;
                    for (size_t k = 0; k < n; ++k) rep += b;
                    s.insert(pos, rep);
                    break;
                }
                case 6: s[0] = static_cast<char>(rng() % 6); break;   // same bytes, another reader
            }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
        ++runs;
    }
    std::printf("%ld inputs, no crash\n", runs);
    return 0;
}
