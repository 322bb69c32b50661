// Loss plots: LLaMA-Factory's EMA smoothing and a readable PNG from trainer_state.json.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/plot.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <limits>

using namespace pdsd::plot;

TEST(Plot, EmaSmoothingMatchesLlamaFactoryFormula) {
    std::vector<double> v = {4.0, 2.0, 3.0};
    const double w = 1.8 * (1.0 / (1.0 + std::exp(-0.05 * 3)) - 0.5);
    auto s = ema_smooth(v);
    ASSERT_EQ(s.size(), 3u);
    EXPECT_DOUBLE_EQ(s[0], 4.0);  // last starts at x[0]
    EXPECT_DOUBLE_EQ(s[1], 4.0 * w + (1 - w) * 2.0);
    EXPECT_DOUBLE_EQ(s[2], s[1] * w + (1 - w) * 3.0);
    EXPECT_TRUE(ema_smooth({}).empty());
}

TEST(Plot, NiceTicksCoverRange) {
    auto t = nice_ticks(0.0, 100.0);
    ASSERT_GE(t.size(), 4u);
    EXPECT_LE(t.size(), 10u);
    EXPECT_DOUBLE_EQ(t.front(), 0.0);
    EXPECT_DOUBLE_EQ(t.back(), 100.0);
    auto u = nice_ticks(1.93, 2.41);
    for (double x : u) {
        EXPECT_GE(x, 1.93);
        EXPECT_LE(x, 2.41);
    }
}

TEST(Plot, RendersPngOfTheRightSize) {
    LinePlot p;
    p.title = "training loss of saves/x";
    for (int i = 1; i <= 50; ++i) {
        p.x.push_back(i);
        p.y.push_back(3.0 * std::exp(-i / 20.0) + 0.2 * std::sin(i * 1.7));
    }
    std::string png = render_loss_png(p);
    ASSERT_GT(png.size(), 24u);
    EXPECT_EQ(png.substr(1, 3), "PNG");
    auto be32 = [&](size_t off) {
        return (uint32_t(uint8_t(png[off])) << 24) | (uint32_t(uint8_t(png[off + 1])) << 16) |
               (uint32_t(uint8_t(png[off + 2])) << 8) | uint32_t(uint8_t(png[off + 3]));
    };
    EXPECT_EQ(be32(16), 640u);  // IHDR width, height: matplotlib's 6.4 x 4.8 in at dpi 100
    EXPECT_EQ(be32(20), 480u);
    LinePlot bad;
    EXPECT_THROW(render_loss_png(bad), pdsd::DataError);
}

TEST(Plot, WritesTrainingLossAndEvalLossFromTrainerState) {
    pdsd::test::TempDir dir;
    nlohmann::json hist = nlohmann::json::array();
    for (int i = 1; i <= 30; ++i) {
        hist.push_back({{"step", i}, {"loss", 2.5 - 0.05 * i + 0.1 * std::cos(i)}, {"epoch", i / 10.0}});
        if (i % 10 == 0) hist.push_back({{"step", i}, {"eval_loss", 2.4 - 0.04 * i}});
    }
    pdsd::write_file_atomic(dir.file("trainer_state.json"), nlohmann::json{{"log_history", hist}}.dump());
    auto files = plot_trainer_state(dir.str());
    ASSERT_EQ(files.size(), 2u);
    EXPECT_TRUE(std::filesystem::exists(dir.file("training_loss.png")));
    EXPECT_TRUE(std::filesystem::exists(dir.file("training_eval_loss.png")));
    if (const char* keep = std::getenv("PDSD_KEEP_PLOT")) {  // for looking at it
        std::filesystem::copy_file(dir.file("training_loss.png"), keep, std::filesystem::copy_options::overwrite_existing);
    }
}

// Series a real run can produce: a flat curve (lr 5e-6 with 100 warmup steps: every value
// the same, or equal to 1e-17), a single point, NaN/inf steps. Each must render (bounded
// ticks, finite axes) or, when nothing is finite, be refused with a DataError.
TEST(Plot, FlatSinglePointAndNonFiniteSeriesRender) {
    const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
    const std::vector<std::vector<double>> series = {
        std::vector<double>(48, 2.3125),                        // constant
        {2.3125, 2.3125 + 4e-16, 2.3125, 2.3125 - 4e-16},      // flat to the last bit
        {1e-300, 2e-300},                                       // tiny magnitudes
        {0.0, 0.0, 0.0},                                        // all zero
        {7.5},                                                  // one point
        {2.0, nan, 1.5, inf, 1.2, -inf, 1.1},                   // gaps
        {nan, 2.0},                                             // starts with NaN
    };
    for (const auto& ys : series) {
        LinePlot p;
        p.title = "training loss of saves/flat";
        for (size_t i = 0; i < ys.size(); ++i) p.x.push_back(static_cast<double>(i + 1));
        p.y = ys;
        std::string png;
        ASSERT_NO_THROW(png = render_loss_png(p)) << ys.size() << " points, first " << ys[0];
        EXPECT_EQ(png.substr(1, 3), "PNG");
    }
    LinePlot all_nan;
    all_nan.x = {1, 2};
    all_nan.y = {nan, inf};
    EXPECT_THROW(render_loss_png(all_nan), pdsd::DataError);
}

TEST(Plot, NiceTicksStayBoundedOnDegenerateRanges) {
    for (auto [lo, hi] : std::vector<std::pair<double, double>>{{2.3125, 2.3125 + 1e-17}, {1e15, 1e15 + 1}, {-1e-300, 1e-300}, {0, 1e308}, {1e17, 1e17 + 64}}) {
        auto t = nice_ticks(lo, hi);
        EXPECT_GE(t.size(), 1u);
        EXPECT_LE(t.size(), 17u);
    }
}

TEST(Plot, TrainerStateWithOnlyNonFiniteLossesSkipsThePlotWithoutFailing) {
    pdsd::test::TempDir dir;
    // Python's json writes NaN; nlohmann writes null for it. Neither may fail plot_loss.
    pdsd::write_file_atomic(dir.file("trainer_state.json"), R"({"log_history": [{"step": 1, "loss": null}, {"step": 2, "loss": null}]})");
    std::vector<std::string> files;
    ASSERT_NO_THROW(files = plot_trainer_state(dir.str()));
    EXPECT_TRUE(files.empty());
}
