// The public socket of `pdsd serve`: an epoll loop that reads requests in full before any
// worker thread sees them, so clients that trickle headers, announce a body and never send
// it, or open hundreds of connections hold a few kilobytes each and never a thread.
//
// Why not cpp-httplib alone: its thread-per-connection model parks one pool thread on every
// slow client (64 trickling connections starved /health and chat for the whole attack), its
// timeouts are per read (a byte every 29 s keeps a thread forever), and its payload limit is
// not applied to chunked bodies. The routes stay on httplib: a complete, de-chunked request is
// handed to httplib::Server::process_request through an in-memory Stream on a worker, and the
// response is written back by the loop with backpressure (a worker blocks only while more
// than kHighWaterBytes of its response wait for a slow reader).
//
// Rules (docs/serve.md "Slow and hostile clients"):
// - headers within header_timeout_s of the connection being ready (idle keep-alive ones are
//   closed after idle_timeout_s), at most max_header_bytes;
// - the body within body_timeout_s + received / kMinBodyBytesPerSec (a fast large upload gets
//   more time, a trickle does not); Content-Length above max_body_bytes is a 413 at once, a
//   chunked body is a 413 as soon as its decoded size passes the limit;
// - at most max_conns_per_client open connections per client address (429 beyond), at most
//   max_conns in all (503 beyond);
// - a response that the client does not read for write_timeout_s is abandoned.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace pdsd::serve {

struct FrontOptions {
    std::string host = "127.0.0.1";
    int port = 0;                          // 0: any free port
    int threads = 64;                      // workers running routes (each open stream holds one)
    size_t max_body_bytes = 64u << 20;     // any request body, decoded size for chunked
    size_t max_header_bytes = 64u << 10;   // request line + headers
    double header_timeout_s = 10;
    double body_timeout_s = 60;
    double idle_timeout_s = 5;             // keep-alive: a ready connection with no byte yet
    double write_timeout_s = 30;           // no byte of the response accepted for this long
    int max_conns_per_client = 128;        // 0: no per-address cap (behind a reverse proxy)
    int max_conns = 4096;                  // lowered to the open-file limit at bind
    int keep_alive_max = 100;              // requests per connection
};

// The OpenAI error `type` for an HTTP status, shared by the front end's refusals and the routes.
const char* error_type(int status);

// Runs one request that is complete in `strm`; returns false when the response could not be
// written. `close` asks for Connection: close; `closed` is set when the request asked for it.
using Dispatch = std::function<bool(httplib::Stream& strm, bool close, bool& closed)>;

class HttpFront {
public:
    HttpFront(FrontOptions options, Dispatch dispatch);
    ~HttpFront();
    HttpFront(const HttpFront&) = delete;
    HttpFront& operator=(const HttpFront&) = delete;

    // Binds host:port and returns the bound port; IoError when it cannot.
    int bind();
    // Serves until stop() (blocking).
    void run();
    // Thread-safe, idempotent; run() returns soon after.
    void stop();
    // Prometheus lines: connections open, requests refused by reason.
    std::string metrics_text() const;

    static constexpr size_t kHighWaterBytes = 1u << 20;
    static constexpr double kMinBodyBytesPerSec = 64 * 1024;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pdsd::serve
