// Loss-curve PNGs with cairo; see plot.h. Pixel sizes follow matplotlib's defaults at dpi 100
// (1 pt = 100/72 px) so the picture reads like LLaMA-Factory's training_loss.png.
#include "pdsd/core/plot.h"

#include "pdsd/core/error.h"
#include "pdsd/core/file_util.h"
#include "pdsd/core/json_io.h"
#include "pdsd/core/log.h"

#include <cairo.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

namespace pdsd::plot {

std::vector<double> ema_smooth(const std::vector<double>& values) {
    std::vector<double> out;
    if (values.empty()) return out;
    out.reserve(values.size());
    const double n = static_cast<double>(values.size());
    const double weight = 1.8 * (1.0 / (1.0 + std::exp(-0.05 * n)) - 0.5);
    double last = values[0];
    bool started = std::isfinite(last);
    for (double v : values) {
        if (!std::isfinite(v)) {  // a NaN/inf step is a gap; it does not poison the rest
            out.push_back(v);
            continue;
        }
        last = started ? last * weight + (1.0 - weight) * v : v;
        started = true;
        out.push_back(last);
    }
    return out;
}

std::vector<double> nice_ticks(double lo, double hi) {
    std::vector<double> ticks;
    if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi) || !std::isfinite(hi - lo)) {
        ticks.push_back(lo);
        return ticks;
    }
    // Smallest "nice" step giving at most 9 intervals (matplotlib's MaxNLocator, nbins auto).
    const double raw = (hi - lo) / 8.0;
    const double mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = 10 * mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
        if (m * mag >= raw) {
            step = m * mag;
            break;
        }
    }
    // Ticks are k * step for whole k: repeated `t += step` never advances once step is below
    // the spacing of doubles near t (a flat loss curve at 2.3 with a 1e-17 range), so count.
    const double k_first = std::ceil(lo / step - 1e-9), k_last = std::floor(hi / step + 1e-9);
    if (!(k_last >= k_first) || k_last - k_first > 16 || std::max(std::abs(k_first), std::abs(k_last)) > 1e15) {  // k + 1 exact
        ticks.push_back(lo);
        ticks.push_back(hi);
        return ticks;
    }
    for (double k = k_first; k <= k_last; k += 1) ticks.push_back(std::abs(k) < 0.5 ? 0.0 : k * step);
    return ticks;
}

namespace {

constexpr double kPt = 100.0 / 72.0;  // pixels per point at dpi 100

std::string tick_label(double v, double step) {
    int decimals = 0;
    if (step > 0) {
        double d = -std::floor(std::log10(step) + 1e-9);
        decimals = static_cast<int>(std::max(0.0, d));
        // 2.5 x 10^k needs one more digit than 10^k.
        double scaled = step * std::pow(10.0, decimals);
        if (std::abs(scaled - std::round(scaled)) > 1e-6) ++decimals;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

struct Range {
    double lo, hi;
};

void finite_min_max(const std::vector<double>& v, double& lo, double& hi) {
    for (double x : v) {
        if (!std::isfinite(x)) continue;
        lo = std::min(lo, x);
        hi = std::max(hi, x);
    }
}

// Axis range of the finite values of a (and b), with matplotlib's 5% margins. A range too
// narrow to label at the values' magnitude (a flat curve) is widened around its centre.
Range data_range(const std::vector<double>& a, const std::vector<double>* b) {
    double lo = INFINITY, hi = -INFINITY;
    finite_min_max(a, lo, hi);
    if (b) finite_min_max(*b, lo, hi);
    if (!(lo <= hi)) return {0.0, 1.0};  // nothing finite: callers skip such plots
    const double scale = std::max(std::abs(lo), std::abs(hi));
    if (hi - lo <= scale * 1e-9 || !std::isfinite(hi - lo)) {
        const double mid = lo / 2 + hi / 2, pad = scale == 0 ? 1.0 : scale * 0.05;
        return {mid - pad, mid + pad};
    }
    double m = (hi - lo) * 0.05;  // axes.xmargin / ymargin
    return {lo - m, hi + m};
}

struct Png {
    std::string bytes;
};

cairo_status_t append_png(void* closure, const unsigned char* data, unsigned int length) {
    static_cast<Png*>(closure)->bytes.append(reinterpret_cast<const char*>(data), length);
    return CAIRO_STATUS_SUCCESS;
}

void text_at(cairo_t* cr, const std::string& s, double x, double y, double ax, double ay) {
    // Draw s with its anchor (ax, ay in [0,1] of its extent box) at (x, y).
    cairo_text_extents_t e;
    cairo_text_extents(cr, s.c_str(), &e);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    const double h = fe.ascent;  // cap-ish height: stable across strings
    cairo_move_to(cr, x - e.x_advance * ax, y + h * (1 - ay) - 0.0);
    cairo_show_text(cr, s.c_str());
}

}  // namespace

std::string render_loss_png(const LinePlot& p) {
    if (p.x.empty() || p.x.size() != p.y.size()) {
        throw DataError(ErrorInfo{}.at("loss plot '" + p.title + "'")
                            .expected("the same number (>= 1) of steps and values")
                            .found(std::to_string(p.x.size()) + " steps, " + std::to_string(p.y.size()) + " values"));
    }
    if (std::none_of(p.y.begin(), p.y.end(), [](double v) { return std::isfinite(v); })) {
        throw DataError(ErrorInfo{}.at("loss plot '" + p.title + "'").expected("at least one finite value")
                            .found("only NaN or infinite values").hint("the run diverged; lower learning_rate"));
    }
    const std::vector<double> smooth = ema_smooth(p.y);
    const double W = p.width, H = p.height;
    const double L = 0.125 * W, R = 0.9 * W, T = (1 - 0.88) * H, B = (1 - 0.11) * H;  // axes box (px)
    const Range xr = data_range(p.x, nullptr), yr = data_range(p.y, &smooth);
    auto px = [&](double x) { return L + (x - xr.lo) / (xr.hi - xr.lo) * (R - L); };
    auto py = [&](double y) { return B - (y - yr.lo) / (yr.hi - yr.lo) * (B - T); };

    std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
        cairo_image_surface_create(CAIRO_FORMAT_ARGB32, p.width, p.height), cairo_surface_destroy);
    std::unique_ptr<cairo_t, decltype(&cairo_destroy)> ctx(cairo_create(surface.get()), cairo_destroy);
    cairo_t* cr = ctx.get();
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

    // Curves, clipped to the axes box: raw (alpha 0.4) then smoothed; #1f77b4, 1.5 pt wide.
    const double cr_r = 0x1f / 255.0, cr_g = 0x77 / 255.0, cr_b = 0xb4 / 255.0;
    auto curve = [&](const std::vector<double>& ys, double alpha) {
        cairo_save(cr);
        cairo_rectangle(cr, L, T, R - L, B - T);
        cairo_clip(cr);
        cairo_set_source_rgba(cr, cr_r, cr_g, cr_b, alpha);
        cairo_set_line_width(cr, 1.5 * kPt);
        cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
        cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
        bool pen_down = false;  // NaN/inf points are gaps in the line, as in matplotlib
        for (size_t i = 0; i < ys.size(); ++i) {
            if (!std::isfinite(ys[i]) || !std::isfinite(p.x[i])) {
                pen_down = false;
                continue;
            }
            if (!pen_down) {
                cairo_move_to(cr, px(p.x[i]), py(ys[i]));
                cairo_rel_line_to(cr, 0.01, 0);  // a lone point still shows as a dot
            } else {
                cairo_line_to(cr, px(p.x[i]), py(ys[i]));
            }
            pen_down = true;
        }
        cairo_stroke(cr);
        cairo_restore(cr);
    };
    curve(p.y, 0.4);
    curve(smooth, 1.0);

    // Frame (0.8 pt black spines).
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 0.8 * kPt);
    cairo_rectangle(cr, L, T, R - L, B - T);
    cairo_stroke(cr);

    // Ticks: 3.5 pt outward, labels 10 pt with 3.5 pt padding.
    const double tick_len = 3.5 * kPt, pad = 3.5 * kPt;
    cairo_set_font_size(cr, 10 * kPt);
    auto xt = nice_ticks(xr.lo, xr.hi);
    auto yt = nice_ticks(yr.lo, yr.hi);
    const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1.0, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1.0;
    double max_ylabel_w = 0;
    for (double t : xt) {
        double x = px(t);
        cairo_move_to(cr, x, B);
        cairo_line_to(cr, x, B + tick_len);
        cairo_stroke(cr);
        text_at(cr, tick_label(t, xstep), x, B + tick_len + pad, 0.5, 0.0);
    }
    for (double t : yt) {
        double y = py(t);
        cairo_move_to(cr, L, y);
        cairo_line_to(cr, L - tick_len, y);
        cairo_stroke(cr);
        std::string s = tick_label(t, ystep);
        cairo_text_extents_t e;
        cairo_text_extents(cr, s.c_str(), &e);
        max_ylabel_w = std::max(max_ylabel_w, e.x_advance);
        text_at(cr, s, L - tick_len - pad, y, 1.0, 0.5);
    }
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);

    // Axis labels (10 pt) and title (12 pt).
    text_at(cr, p.xlabel, (L + R) / 2, B + tick_len + pad + fe.ascent + 4 * kPt, 0.5, 0.0);
    cairo_save(cr);
    cairo_translate(cr, L - tick_len - pad - max_ylabel_w - 4 * kPt - fe.descent, (T + B) / 2);
    cairo_rotate(cr, -M_PI / 2);
    text_at(cr, p.ylabel, 0, 0, 0.5, 1.0);
    cairo_restore(cr);
    cairo_set_font_size(cr, 12 * kPt);
    {  // a long output_dir: shrink the title to fit the figure (matplotlib would cut it off)
        cairo_text_extents_t e;
        cairo_text_extents(cr, p.title.c_str(), &e);
        if (e.x_advance > W - 10) cairo_set_font_size(cr, 12 * kPt * (W - 10) / e.x_advance);
    }
    text_at(cr, p.title, W / 2, T - 6 * kPt, 0.5, 1.0);

    // Legend, upper right: framed box, 2 rows (line sample + label).
    cairo_set_font_size(cr, 10 * kPt);
    cairo_font_extents(cr, &fe);
    const char* names[2] = {"original", "smoothed"};
    double label_w = 0;
    for (const char* n : names) {
        cairo_text_extents_t e;
        cairo_text_extents(cr, n, &e);
        label_w = std::max(label_w, e.x_advance);
    }
    const double row = fe.ascent + fe.descent + 0.5 * 10 * kPt * 0.5, sample = 2.0 * 10 * kPt, gap = 0.8 * 10 * kPt;
    const double box_w = 0.4 * 10 * kPt + sample + gap + label_w + 0.4 * 10 * kPt;
    const double box_h = 2 * row + 0.8 * 10 * kPt;
    const double bx = R - 0.5 * 10 * kPt - box_w, by = T + 0.5 * 10 * kPt;
    cairo_set_source_rgba(cr, 1, 1, 1, 0.8);
    cairo_rectangle(cr, bx, by, box_w, box_h);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
    cairo_set_line_width(cr, 1.0 * kPt);
    cairo_stroke(cr);
    for (int i = 0; i < 2; ++i) {
        double cy = by + 0.4 * 10 * kPt + row * (i + 0.5);
        double sx = bx + 0.4 * 10 * kPt;
        cairo_set_source_rgba(cr, cr_r, cr_g, cr_b, i == 0 ? 0.4 : 1.0);
        cairo_set_line_width(cr, 1.5 * kPt);
        cairo_move_to(cr, sx, cy);
        cairo_line_to(cr, sx + sample, cy);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        text_at(cr, names[i], sx + sample + gap, cy, 0.0, 0.5);
    }

    cairo_surface_flush(surface.get());
    Png png;
    cairo_status_t st = cairo_surface_write_to_png_stream(surface.get(), append_png, &png);
    if (st != CAIRO_STATUS_SUCCESS) {
        throw IoError(ErrorInfo{}.at("loss plot").msg(std::string("cairo could not encode the PNG: ") + cairo_status_to_string(st)));
    }
    return png.bytes;
}

void write_loss_png(const std::string& path, const LinePlot& plot) {
    write_file_atomic(path, render_loss_png(plot));
}

std::vector<std::string> plot_trainer_state(const std::string& output_dir, const std::vector<std::string>& keys) {
    const std::string state_path = (std::filesystem::path(output_dir) / "trainer_state.json").string();
    const nlohmann::json state = read_json_file(state_path);
    std::vector<std::string> written;
    if (!state.contains("log_history") || !state["log_history"].is_array()) {
        throw FormatError(ErrorInfo{state_path}.at("log_history").expected("an array of log records").found("none"));
    }
    for (const auto& key : keys) {
        LinePlot p;
        for (const auto& rec : state["log_history"]) {
            if (rec.contains(key) && rec[key].is_number() && rec.contains("step")) {
                p.x.push_back(rec["step"].get<double>());
                p.y.push_back(rec[key].get<double>());
            }
        }
        if (p.y.empty()) {
            log::info("plot", "no metric " + key + " to plot");
            continue;
        }
        if (std::none_of(p.y.begin(), p.y.end(), [](double v) { return std::isfinite(v); })) {
            log::warn("plot", "every " + key + " value is NaN or infinite: training_" + key + ".png not drawn");
            continue;
        }
        p.title = "training " + key + " of " + output_dir;
        p.ylabel = key;
        std::string name = key;
        std::replace(name.begin(), name.end(), '/', '_');
        const std::string path = (std::filesystem::path(output_dir) / ("training_" + name + ".png")).string();
        write_loss_png(path, p);
        log::info("plot", "figure saved at: " + path);
        written.push_back(path);
    }
    return written;
}

}  // namespace pdsd::plot
