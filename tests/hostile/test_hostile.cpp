// Hostile input (issue #16): the JSON depth/size budget, range-checked integers, and the
// knowledge-base readers (JSON, CSV, HTML, docx) failing with a DataError instead of a
// stack overflow, an entity/zip bomb or a quadratic scan.
#include "pdsd/core/config.h"
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/data/dataset.h"
#include "pdsd/kb/knowledge_base.h"
#include "pdsd/kb/loader.h"
#include "pdsd/tokenizer/chat_template.h"
#include "pdsd/tokenizer/tokenizer.h"
#include "test_util.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <zip.h>

namespace fs = std::filesystem;
using namespace pdsd;

namespace {

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

void write(const std::string& path, const std::string& bytes) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << bytes;
}

// A .docx holding word/document.xml = `xml`, as bytes.
std::string make_docx(const std::string& xml, const std::string& dir) {
    std::string path = dir + "/t.docx";
    int err = 0;
    zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
    EXPECT_NE(za, nullptr);
    zip_source_t* src = zip_source_buffer(za, xml.data(), xml.size(), 0);
    EXPECT_GE(zip_file_add(za, "word/document.xml", src, ZIP_FL_ENC_UTF_8), 0);
    EXPECT_EQ(zip_close(za), 0);
    return read_file(path);
}

template <class Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

double seconds_of(const std::function<void()>& fn) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

const char* kW = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";

}  // namespace

// ---- JSON budget -----------------------------------------------------------------------

TEST(JsonLimits, DepthAtTheLimitParsesOneMoreFailsWithPosition) {
    EXPECT_NO_THROW(parse_json_bounded(nested(512), "ok.json"));
    std::string msg = error_of([] { parse_json_bounded(nested(513), "deep.json"); });
    EXPECT_NE(msg.find("deep.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("nesting deeper than 512 levels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("line 1, column 513"), std::string::npos) << msg;
}

TEST(JsonLimits, ThirtyThousandLevelsFailBeforeAnyRecursion) {
    // Was: SIGSEGV in the kb JSON loader's walk and in nlohmann's dump/copy.
    std::string deep = std::string(30000, '{') + std::string(30000, '}');
    EXPECT_THROW(parse_json(deep, "x"), FormatError);
    EXPECT_THROW(parse_ordered_json_bounded(nested(75000), "x"), FormatError);
    EXPECT_TRUE(find_json_limit_violation(nested(75000)).has_value());
}

TEST(JsonLimits, BracketsInsideStringsDoNotCount) {
    std::string s = "{\"a\": \"" + std::string(5000, '[') + "\\\"" + std::string(5000, '{') + "\"}";
    EXPECT_FALSE(find_json_limit_violation(s).has_value());
    EXPECT_EQ(parse_json_bounded(s, "x")["a"].get<std::string>().size(), 10001u);
}

TEST(JsonLimits, SizeBudgetAndSyntaxErrorsStayFormatErrors) {
    JsonLimits small;
    small.max_bytes = 10;
    std::string msg = error_of([&] { parse_json_bounded("[1, 2, 3, 4, 5]", "big.json", small); });
    EXPECT_NE(msg.find("larger than the limit of 10 bytes"), std::string::npos) << msg;
    EXPECT_THROW(parse_json_bounded("{\"a\": }", "bad.json"), FormatError);
    EXPECT_THROW(parse_json_bounded("[1e999]", "num.json"), FormatError);
}

// ---- integers in range -----------------------------------------------------------------

TEST(IntRange, NegativeAndOverflowingValuesAreRefusedNotWrapped) {
    EXPECT_EQ(parse_int_in_range("5", "top_k", 1, 10), 5);
    std::string msg = error_of([] { parse_int_in_range("-3", "top_k", 1, 10000); });
    EXPECT_NE(msg.find("top_k"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[1, 10000]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("-3"), std::string::npos) << msg;
    EXPECT_THROW(parse_int_in_range("99999999999999999999", "n", 0, 10), ConfigError);
    EXPECT_THROW(parse_int_in_range("1.5", "n", 0, 10), ConfigError);
    EXPECT_THROW(check_int_in_range(-1, "--chunk_size", 1, 100), ConfigError);
}

TEST(IntRange, JsonIntegersAreTypedAndRanged) {
    auto j = nlohmann::json::parse(R"({"a": 3, "neg": -5, "f": 3.0, "s": "3", "b": true, "big": 18446744073709551615})");
    EXPECT_EQ(json_int_in_range(j, "a", "x.jsonl:1", 1, 10), 3);
    EXPECT_EQ(json_int_in_range(j, "missing", "x", 1, 10, 7), 7);
    for (const char* k : {"neg", "f", "s", "b", "big", "missing"})
        EXPECT_THROW(json_int_in_range(j, k, "x.jsonl:1", 1, 10), FormatError) << k;
    std::string msg = error_of([&] { json_int_in_range(j, "s", "x.jsonl:1", 1, 10); });
    EXPECT_NE(msg.find("wrong type"), std::string::npos) << msg;
}

TEST(IntRange, KbSettingsNegativeTopKIsAConfigError) {
    test::TempDir d;
    write(d.file("kb_settings.yaml"), "top_k: -3\n");
    std::string msg = error_of([&] { kb::load_kb_settings(d.str()); });
    EXPECT_NE(msg.find("top_k"), std::string::npos) << msg;
    EXPECT_NE(msg.find("-3"), std::string::npos) << msg;
    write(d.file("kb_settings.yaml"), "chunk_size: -1\n");
    EXPECT_THROW(kb::load_kb_settings(d.str()), ConfigError);
}

// ---- knowledge-base readers ----------------------------------------------------------------

TEST(HostileKb, DeepJsonAndJsonlAreDataErrors) {
    std::string msg = error_of([] { kb::load_bytes("deep.json", nested(30000)); });
    EXPECT_NE(msg.find("deep.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("nesting deeper than 512 levels"), std::string::npos) << msg;
    EXPECT_THROW(kb::load_bytes("deep.jsonl", "{\"a\": 1}\n" + nested(30000) + "\n"), DataError);
    msg = error_of([] { kb::load_bytes("deep.jsonl", "{\"a\": 1}\n" + nested(30000) + "\n"); });
    EXPECT_NE(msg.find("deep.jsonl:2"), std::string::npos) << msg;
}

TEST(HostileKb, AmplifyingJsonAndCsvStopAtTheTextBudget) {
    // A 10 KB key over 30,000 elements would print 300 MB of "key: 1" lines.
    std::string key(10000, 'k');
    std::string arr = "[";
    for (int i = 0; i < 30000; ++i) arr += i ? ",1" : "1";
    arr += "]";
    std::string msg = error_of([&] { kb::load_bytes("amp.json", "{\"" + key + "\": " + arr + "}"); });
    EXPECT_NE(msg.find("extracted text too large"), std::string::npos) << msg;
    // 2,000 columns of 1000-char names, 200 one-field rows: 400 MB of "name: None".
    std::string header;
    for (int c = 0; c < 2000; ++c) header += (c ? "," : "") + std::string(1000, 'a' + c % 26);
    std::string csv = header + "\n";
    for (int r = 0; r < 200; ++r) csv += "x\n";
    EXPECT_THROW(kb::load_bytes("amp.csv", csv), DataError);
}

TEST(HostileKb, HtmlEntitiesAndScriptsAreLinear) {
    // Each '&' used to search the rest of the document for ';', each <script> copied it.
    std::string amps(400000, '&');
    std::string scripts;
    for (int i = 0; i < 40000; ++i) scripts += "<script>x</script>";
    double s = seconds_of([&] {
        auto lf = kb::load_bytes("a.html", "<p>" + amps + "</p>" + scripts + "<p>end</p>");
        EXPECT_NE(lf.docs.at(0).text.find("end"), std::string::npos);
    });
    EXPECT_LT(s, 5.0);
    EXPECT_EQ(kb::html_to_text("<SCRIPT>hidden</sCrIpT>shown &amp; &#x41;&nbsp"), "shown & A&nbsp");
}

TEST(HostileKb, DocxEntityBombAndExternalEntityAreRefused) {
    test::TempDir d;
    std::string lol = "<!ENTITY l0 \"lol\">";
    for (int i = 1; i < 10; ++i) {
        std::string v;
        for (int k = 0; k < 10; ++k) v += "&l" + std::to_string(i - 1) + ";";
        lol += "<!ENTITY l" + std::to_string(i) + " \"" + v + "\">";
    }
    std::string bomb = "<?xml version=\"1.0\"?><!DOCTYPE w:document [" + lol + "]><w:document " + kW +
                       "><w:body><w:p><w:r><w:t>&l9;</w:t></w:r></w:p></w:body></w:document>";
    std::string msg = error_of([&] { kb::load_bytes("bomb.docx", make_docx(bomb, d.str())); });
    EXPECT_NE(msg.find("bomb.docx"), std::string::npos) << msg;
    EXPECT_NE(msg.find("DTD"), std::string::npos) << msg;
    std::string xxe = "<?xml version=\"1.0\"?><!DOCTYPE w:document [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><w:document " +
                      std::string(kW) + "><w:body><w:p><w:r><w:t>&x;</w:t></w:r></w:p></w:body></w:document>";
    EXPECT_THROW(kb::load_bytes("xxe.docx", make_docx(xxe, d.str())), DataError);
    // Predefined entities and character references still work.
    std::string ok = std::string("<w:document ") + kW + "><w:body><w:p><w:r><w:t>a &amp; b &#x4E2D;</w:t></w:r></w:p></w:body></w:document>";
    EXPECT_EQ(kb::load_bytes("ok.docx", make_docx(ok, d.str())).docs.at(0).text, "a & b \xE4\xB8\xAD\n");
}

TEST(HostileKb, DocxZipBombAndDeepXmlAreRefused) {
    test::TempDir d;
    std::string spaces(100u << 20, ' ');   // 100 MiB uncompressed, ~100 KB in the zip
    std::string bomb = make_docx(spaces, d.str());
    EXPECT_LT(bomb.size(), size_t{1} << 20);
    std::string msg = error_of([&] { kb::load_bytes("zip.docx", bomb); });
    EXPECT_NE(msg.find("too large"), std::string::npos) << msg;
    std::string deep = std::string("<w:document ") + kW + "><w:body>";
    for (int i = 0; i < 20000; ++i) deep += "<w:sdt>";
    for (int i = 0; i < 20000; ++i) deep += "</w:sdt>";
    deep += "</w:body></w:document>";
    EXPECT_THROW(kb::load_bytes("deep.docx", make_docx(deep, d.str())), DataError);
}

TEST(HostileKb, RebuildMarksHostileFilesFailedRefusesOutsideLinksAndCleansTemps) {
    test::TempDir d;
    std::string content = d.file("knowledge_base/k/content");
    write(content + "/good.md", "good text about pdsd\n");
    write(content + "/deep.json", nested(30000));
    write(d.file("outside/secret.txt"), "secret outside content\n");
    fs::create_symlink(d.file("outside/secret.txt"), content + "/secret.txt");
    fs::create_directory_symlink(d.file("outside"), content + "/outdir");
    std::string stale = d.file("knowledge_base/k/vector_store/hash-ngram/.index.faiss.tmp.999999999");
    write(stale, "partial");
    kb::UpdateOptions o;
    o.kb_names = {"k"};
    o.progress = false;
    kb::UpdateReport r = kb::update_knowledge_bases(d.str(), o);
    std::map<std::string, kb::FileChange> by;
    for (auto& f : r.files) by[f.file] = f;
    EXPECT_EQ(by["good.md"].action, "added");
    EXPECT_EQ(by["deep.json"].action, "failed");
    EXPECT_NE(by["deep.json"].note.find("nesting deeper"), std::string::npos) << by["deep.json"].note;
    EXPECT_EQ(by["secret.txt"].action, "skipped");
    EXPECT_NE(by["secret.txt"].note.find("outside content/"), std::string::npos);
    EXPECT_EQ(by["outdir"].action, "skipped");
    EXPECT_EQ(r.count("added"), 1u);
    EXPECT_FALSE(fs::exists(stale));
}

TEST(HostileKb, AddOfAHostileFileReportsFailedAndRemovesIt) {
    test::TempDir d;
    write(d.file("in/deep.json"), nested(30000));
    kb::UpdateOptions o;
    o.progress = false;
    kb::UpdateReport r = kb::add_files(d.str(), "k", {d.file("in/deep.json")}, o);
    ASSERT_EQ(r.count("failed"), 1u);
    EXPECT_FALSE(fs::exists(d.file("knowledge_base/k/content/deep.json")));
    EXPECT_NE(r.files.at(0).note.find("removed from content/"), std::string::npos);
}

TEST(HostileKb, RootThatIsAFileIsAnIoError) {
    test::TempDir d;
    write(d.file("f"), "x");
    kb::UpdateOptions o;
    o.progress = false;
    EXPECT_THROW(kb::update_knowledge_bases(d.file("f"), o), IoError);
}

// ---- datasets and tokenizer ------------------------------------------------------------------

TEST(HostileData, DeepRecordIsAProblemNotACrash) {
    test::TempDir d;
    write(d.file("dataset_info.json"), R"({"d": {"file_name": "d.json"}})");
    write(d.file("d.json"), "[" + nested(75000) + "]");
    data::Problems problems;
    data::Registry reg = data::Registry::load(d.str(), problems);
    data::for_each_dataset_conversation(reg, {"d"}, problems, [](const data::RecordRef&, const data::Conversation&) {});
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].format().find("nesting deeper than 512"), std::string::npos) << problems[0].format();
    write(d.file("dataset_info.json"), std::string(30000, '{') + std::string(30000, '}'));
    data::Problems p2;
    data::Registry::load(d.str(), p2);
    ASSERT_EQ(p2.size(), 1u);
}

TEST(HostileTokenizer, AddedTokensOfTheWrongTypeAndMissingChatTokens) {
    test::TempDir d;
    auto j = nlohmann::json::parse(read_file(test::fixtures() + "/qwen-tokenizer/tokenizer.json"));
    j["added_tokens"] = "x";
    write(d.file("a/tokenizer.json"), j.dump());
    std::string msg = error_of([&] { tokenizer::Tokenizer::load(d.file("a")); });
    EXPECT_NE(msg.find("added_tokens"), std::string::npos) << msg;
    j["added_tokens"] = nlohmann::json::array();
    write(d.file("b/tokenizer.json"), j.dump());
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(d.file("b"));
    msg = error_of([&] { tokenizer::encoder_of(tok); });
    EXPECT_NE(msg.find("missing special token <|im_start|>"), std::string::npos) << msg;
    write(d.file("c/tokenizer.json"), "[]");
    EXPECT_THROW(tokenizer::Tokenizer::load(d.file("c")), FormatError);
    write(d.file("e/tokenizer.json"), R"({"model": {"type": 7, "vocab": {}, "merges": []}})");
    EXPECT_THROW(tokenizer::Tokenizer::load(d.file("e")), FormatError);
    // The real tokenizer has both markers as special tokens.
    tokenizer::Tokenizer qwen = tokenizer::Tokenizer::load(test::fixtures() + "/qwen-tokenizer");
    EXPECT_NO_THROW(tokenizer::encoder_of(qwen));
}
