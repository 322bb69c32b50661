// Loss curves as PNG, the way LLaMA-Factory's --plot_loss draws them (extras/ploting.py),
// rendered with cairo instead of matplotlib. Torch-free.
//
// The figure copies matplotlib's defaults that LLaMA-Factory relies on: 640x480 px (6.4x4.8 in
// at dpi 100), axes box at 12.5%..90% x and 11%..88% y, 5% data margins, DejaVu Sans 10 pt
// labels, the raw curve in #1f77b4 at alpha 0.4 ("original"), the EMA-smoothed curve solid
// ("smoothed"), legend, title "training <key> of <output_dir>", x label "step", y label <key>.
#pragma once

#include <string>
#include <vector>

namespace pdsd::plot {

// LLaMA-Factory's smooth(): TensorBoard-style EMA with
// weight = 1.8 * (1 / (1 + exp(-0.05 * n)) - 0.5), n = number of points;
// smoothed[i] = last * weight + (1 - weight) * x[i], last starting at x[0].
std::vector<double> ema_smooth(const std::vector<double>& values);

struct LinePlot {
    std::string title;
    std::string xlabel = "step";
    std::string ylabel = "loss";
    std::vector<double> x;  // same length as y, at least one point
    std::vector<double> y;
    int width = 640;        // pixels
    int height = 480;
};

// PNG bytes of `plot` (raw + smoothed curves). Throws DataError for empty or mismatched data.
std::string render_loss_png(const LinePlot& plot);

// render_loss_png written atomically to `path`.
void write_loss_png(const std::string& path, const LinePlot& plot);

// LLaMA-Factory plot_loss(output_dir, keys): reads output_dir/trainer_state.json and, for each
// key present in some log_history record, writes output_dir/training_<key>.png (x = "step").
// Keys with no values are skipped with one log line. Returns the files written.
std::vector<std::string> plot_trainer_state(const std::string& output_dir,
                                            const std::vector<std::string>& keys = {"loss", "eval_loss"});

// "Nice" tick positions covering [lo, hi] (about 4..9 ticks, steps 1/2/2.5/5 x 10^k).
std::vector<double> nice_ticks(double lo, double hi);

}  // namespace pdsd::plot
