// Loss plots: LLaMA-Factory's EMA smoothing and a readable PNG from trainer_state.json.
#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/plot.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>

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
