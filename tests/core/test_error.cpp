// Error messages carry file, place, expected/found and hint; exit codes by kind.
#include "test_util.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"

using namespace pdsd;

TEST(Error, FormatHasEveryPart) {
    ErrorInfo i{"data/a.json"};
    i.at("record 3").msg("bad role").expected("gpt").found("human").hint("swap the turns");
    EXPECT_EQ(i.format(), "data/a.json: record 3: bad role (expected gpt, found human)\n  hint: swap the turns");
    EXPECT_EQ(ErrorInfo{"f"}.at("k").expected("x").format(), "f: k: expected x");
}

TEST(Error, ExitCodes) {
    EXPECT_EQ(DataError("x").exit_code(), ExitCode::user_error);
    EXPECT_EQ(InternalError("x").exit_code(), ExitCode::internal_error);
    EXPECT_EQ(Interrupted().exit_code(), ExitCode::interrupted);
    clear_interrupt();
    EXPECT_NO_THROW(throw_if_interrupted());
    request_interrupt();
    EXPECT_THROW(throw_if_interrupted(), Interrupted);
    clear_interrupt();
}

TEST(JsonIo, SyntaxErrorHasLineAndColumn) {
    try {
        parse_json("{\n  \"a\": 1,\n  \"b\": ]\n}", "x.json");
        FAIL();
    } catch (const FormatError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("x.json: line 3, column 8"), std::string::npos) << m;
    }
}

TEST(JsonIo, NumberOverflowIsAFormatError) {
    try {
        parse_json("{\"lr\": 1e999}", "x.json");
        FAIL();
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("x.json: invalid JSON"), std::string::npos) << e.what();
    }
}

TEST(FileUtil, AtomicWriteReplacesWhole) {
    test::TempDir d;
    write_file_atomic(d.file("a.txt"), "first");
    write_file_atomic(d.file("a.txt"), "second");
    EXPECT_EQ(read_file(d.file("a.txt")), "second");
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(d.str())) { (void)e; ++n; }
    EXPECT_EQ(n, 1u);  // no temp files left behind
    {
        AtomicFileWriter w(d.file("b.txt"));
        w.write("partial");
        // destroyed without commit: b.txt must not appear
    }
    EXPECT_FALSE(std::filesystem::exists(d.file("b.txt")));
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_file(d.file("a.txt")), sha256_hex("second"));
}
