// Private to src/serve: how a route set (the web page's conversations, the training tab's
// jobs) registers its handlers: through the server's get / post, which add the API key check,
// the error replies and the metrics.
#pragma once

#include <httplib.h>

#include <functional>
#include <string>

namespace pdsd::serve {

using RouteFn = std::function<void(const httplib::Request&, httplib::Response&)>;
using AddRoute = std::function<void(const std::string& path, RouteFn fn)>;

}  // namespace pdsd::serve
