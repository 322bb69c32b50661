// See http_front.h. One loop thread owns every socket; workers only see complete requests and
// write responses into a per-connection buffer that the loop drains.
#include "http_front.h"

#include "pdsd/core/error.h"
#include "pdsd/core/log.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace pdsd::serve {

namespace {

constexpr const char* kComp = "http";
constexpr uint32_t kRead = EPOLLIN | EPOLLRDHUP, kWrite = EPOLLOUT, kNone = 0;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

const char* reason_phrase(int status) {
    switch (status) {
        case 400: return "Bad Request";
        case 408: return "Request Timeout";
        case 413: return "Payload Too Large";
        case 417: return "Expectation Failed";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 501: return "Not Implemented";
        case 503: return "Service Unavailable";
        default: return "Error";
    }
}

// The OpenAI error object the routes answer with (server.cpp reply_error), Connection: close.
std::string error_response(int status, const std::string& message, const std::string& code) {
    nlohmann::json j = {{"error", {{"message", message}, {"type", error_type(status)}, {"param", nullptr}, {"code", code}}}};
    std::string body = j.dump();
    std::ostringstream r;
    r << "HTTP/1.1 " << status << " " << reason_phrase(status) << "\r\nContent-Type: application/json\r\n"
      << "Content-Length: " << body.size() << "\r\nConnection: close\r\n";
    if (status == 429 || status == 503) r << "Retry-After: 1\r\n";
    r << "\r\n" << body;
    return r.str();
}

// A refusal by the loop: status, message, metric label.
struct Refusal {
    int status;
    std::string message, reason;
};

// What the request head says about the body. Parsed strictly: anything a proxy could read
// differently (both framings, two lengths, spaces before the colon) is a 400.
struct Head {
    std::string forward;            // request line + headers for httplib, without framing headers
    bool chunked = false;
    uint64_t content_length = 0;
    bool expect_continue = false;
    bool close = false;             // Connection: close, or HTTP/1.0 without keep-alive
};

bool parse_content_length(const std::string& v, uint64_t& out) {
    if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos) return false;
    out = std::stoull(v);
    return true;
}

// `raw`: the head up to (not including) the blank line. Throws Refusal.
Head parse_head(const std::string& raw) {
    Head h;
    size_t eol = raw.find("\r\n");
    std::string line = raw.substr(0, eol);
    size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string::npos || sp2 == sp1 || line.compare(sp2 + 1, 7, "HTTP/1.") != 0 || line.size() != sp2 + 9)
        throw Refusal{400, "malformed request line", "bad_request"};
    const std::string version = line.substr(sp2 + 1);
    h.forward = line + "\r\n";
    bool have_length = false, keep_alive = false;
    size_t pos = eol == std::string::npos ? raw.size() : eol + 2;
    while (pos < raw.size()) {
        size_t next = raw.find("\r\n", pos);
        if (next == std::string::npos) next = raw.size();
        std::string field = raw.substr(pos, next - pos);
        pos = next + 2;
        size_t colon = field.find(':');
        if (colon == 0 || colon == std::string::npos || field.find_first_of(" \t") < colon)
            throw Refusal{400, "malformed header line", "bad_request"};
        std::string name = lower(field.substr(0, colon)), value = trim(field.substr(colon + 1));
        if (name == "content-length") {
            uint64_t n = 0;
            if (!parse_content_length(value, n) || (have_length && n != h.content_length))
                throw Refusal{400, "invalid Content-Length '" + value + "'", "bad_request"};
            h.content_length = n;
            have_length = true;
        } else if (name == "transfer-encoding") {
            if (lower(value) != "chunked") throw Refusal{501, "Transfer-Encoding '" + value + "' is not supported (only chunked)", "bad_request"};
            h.chunked = true;
        } else if (name == "expect") {
            if (lower(value) != "100-continue") throw Refusal{417, "Expect '" + value + "' is not supported", "bad_request"};
            h.expect_continue = true;
        } else {
            if (name == "connection") {
                h.close = h.close || lower(value) == "close";
                keep_alive = lower(value) == "keep-alive";
            }
            h.forward += field + "\r\n";
        }
    }
    if (h.chunked && have_length) throw Refusal{400, "both Content-Length and Transfer-Encoding: chunked", "bad_request"};
    if (version == "HTTP/1.0" && !keep_alive) h.close = true;
    return h;
}

// Incremental decoder of a chunked body: feed() consumes what it can from `in`.
class ChunkedDecoder {
public:
    // Returns true when the last chunk and the trailers are in. Throws Refusal.
    bool feed(std::string& in, std::string& body, size_t limit) {
        size_t pos = 0;
        while (state_ != State::Done) {
            if (state_ == State::Data) {
                size_t n = std::min<uint64_t>(remaining_, in.size() - pos);
                body.append(in, pos, n);
                pos += n;
                remaining_ -= n;
                if (remaining_ > 0) break;
                state_ = State::DataEnd;
                continue;
            }
            size_t eol = in.find("\r\n", pos);
            if (eol == std::string::npos) {
                if (in.size() - pos > 4096) throw Refusal{400, "chunk header or trailer line over 4096 bytes", "bad_request"};
                break;
            }
            std::string line = in.substr(pos, eol - pos);
            pos = eol + 2;
            step_line(line, body.size(), limit);
        }
        in.erase(0, pos);
        return state_ == State::Done;
    }

private:
    enum class State { Size, Data, DataEnd, Trailer, Done };

    void step_line(const std::string& line, size_t decoded, size_t limit) {
        if (state_ == State::DataEnd) {
            if (!line.empty()) throw Refusal{400, "chunk data longer than its size", "bad_request"};
            state_ = State::Size;
        } else if (state_ == State::Trailer) {
            if (line.empty()) state_ = State::Done;
        } else {
            std::string hex = trim(line.substr(0, line.find(';')));
            if (hex.empty() || hex.size() > 15 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
                throw Refusal{400, "invalid chunk size '" + hex.substr(0, 32) + "'", "bad_request"};
            remaining_ = std::stoull(hex, nullptr, 16);
            if (decoded + remaining_ > limit)
                throw Refusal{413, "request body exceeds the limit of " + std::to_string(limit) + " bytes", "too_large"};
            state_ = remaining_ == 0 ? State::Trailer : State::Data;
        }
    }

    State state_ = State::Size;
    uint64_t remaining_ = 0;
};

enum class Phase { Head, Body, Dispatched, Draining };

struct Conn {
    int fd = -1;
    std::string ip, local_ip;
    int port = 0, local_port = 0;
    bool counted = false;                    // holds a per-client slot
    uint32_t events = 0;                     // epoll interest now
    // Loop only.
    Phase phase = Phase::Head;
    std::string in;                          // received, not yet consumed
    std::string body;                        // the current request's body (decoded)
    Head head;
    ChunkedDecoder chunks;
    Clock::time_point ready_at, body_at, linger_until;
    int served = 0;
    bool peer_eof = false;
    // Shared with the worker, under mu.
    std::mutex mu;
    std::condition_variable cv;
    std::string out;
    size_t out_off = 0;
    Clock::time_point last_progress;
    bool peer_gone = false;                  // a write failed or timed out: the worker stops
    bool worker_done = false, close_after = false;

    size_t pending() const { return out.size() - out_off; }
};

// The request as httplib reads it, the response into the connection's buffer.
class FrontStream : public httplib::Stream {
public:
    FrontStream(std::shared_ptr<Conn> c, std::string request, std::function<void(const std::shared_ptr<Conn>&)> wake)
        : c_(std::move(c)), req_(std::move(request)), wake_(std::move(wake)) {}

    bool is_readable() const override { return pos_ < req_.size(); }
    bool is_writable() const override {
        std::lock_guard<std::mutex> lk(c_->mu);
        return !c_->peer_gone;
    }
    ssize_t read(char* ptr, size_t size) override {
        size_t n = std::min(size, req_.size() - pos_);
        std::memcpy(ptr, req_.data() + pos_, n);
        pos_ += n;
        return static_cast<ssize_t>(n);
    }
    // Blocks while more than kHighWaterBytes wait for the client (backpressure).
    ssize_t write(const char* ptr, size_t size) override {
        bool was_empty;
        {
            std::unique_lock<std::mutex> lk(c_->mu);
            c_->cv.wait(lk, [&] { return c_->peer_gone || c_->pending() <= HttpFront::kHighWaterBytes; });
            if (c_->peer_gone) return -1;
            was_empty = c_->pending() == 0;
            if (was_empty) c_->last_progress = Clock::now();
            c_->out.append(ptr, size);
        }
        if (was_empty) wake_(c_);
        return static_cast<ssize_t>(size);
    }
    void get_remote_ip_and_port(std::string& ip, int& port) const override {
        ip = c_->ip;
        port = c_->port;
    }
    void get_local_ip_and_port(std::string& ip, int& port) const override {
        ip = c_->local_ip;
        port = c_->local_port;
    }
    // httplib only compares it with FD_SETSIZE; the real socket belongs to the loop.
    socket_t socket() const override { return 0; }

private:
    std::shared_ptr<Conn> c_;
    std::string req_;
    size_t pos_ = 0;
    std::function<void(const std::shared_ptr<Conn>&)> wake_;
};

void address_of(const sockaddr_storage& ss, std::string& ip, int& port) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        port = ntohs(a->sin6_port);
    } else {
        auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        port = ntohs(a->sin_port);
    }
    ip = buf;
}

}  // namespace

const char* error_type(int status) {
    switch (status) {
        case 401: return "authentication_error";
        case 403: return "permission_error";
        case 404: return "not_found_error";
        case 413: return "request_too_large";
        case 429: return "rate_limit_error";
        case 503: return "service_unavailable";
        default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

struct HttpFront::Impl {
    FrontOptions o;
    Dispatch dispatch;
    int listen_fd = -1, epoll_fd = -1, wake_fd = -1;
    std::atomic<bool> stopping{false};
    std::map<int, std::shared_ptr<Conn>> conns;      // loop only
    std::map<std::string, int> per_client;           // loop only
    Clock::time_point accept_paused_until{};

    // Workers.
    std::mutex qmu;
    std::condition_variable qcv;
    std::deque<std::pair<std::shared_ptr<Conn>, std::string>> tasks;
    std::vector<std::thread> workers;
    // Connections the workers touched since the loop last looked (under qmu).
    std::vector<std::shared_ptr<Conn>> touched;

    // Metrics.
    std::atomic<int64_t> open{0};
    mutable std::mutex mmu;
    std::map<std::string, uint64_t> refused;

    Impl(FrontOptions opts, Dispatch d) : o(std::move(opts)), dispatch(std::move(d)) {}

    void wake(const std::shared_ptr<Conn>& c) {
        {
            std::lock_guard<std::mutex> lk(qmu);
            touched.push_back(c);
        }
        uint64_t one = 1;
        ssize_t r = ::write(wake_fd, &one, sizeof one);
        (void)r;
    }

    void count_refusal(const std::string& reason) {
        std::lock_guard<std::mutex> lk(mmu);
        refused[reason]++;
    }

    // ---- epoll interest ----
    void want(Conn& c, uint32_t ev) {
        if (c.events == ev) return;
        epoll_event e{};
        e.events = ev;
        e.data.fd = c.fd;
        epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &e);
        c.events = ev;
    }

    void close_conn(const std::shared_ptr<Conn>& c) {
        {
            std::lock_guard<std::mutex> lk(c->mu);
            c->peer_gone = true;
        }
        c->cv.notify_all();
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, nullptr);
        ::close(c->fd);
        if (c->counted && --per_client[c->ip] == 0) per_client.erase(c->ip);
        conns.erase(c->fd);
        open--;
    }

    // Answers with an error and closes once it is sent; what the client still sends is read
    // and dropped for a second, so it sees the answer instead of a reset.
    void refuse(const std::shared_ptr<Conn>& c, const Refusal& r) {
        log::debug(kComp, c->ip + " refused " + std::to_string(r.status) + ": " + r.message);
        count_refusal(r.reason);
        c->phase = Phase::Draining;
        c->linger_until = Clock::now() + std::chrono::seconds(1);
        {
            std::lock_guard<std::mutex> lk(c->mu);
            c->out = error_response(r.status, r.message, r.reason);
            c->out_off = 0;
            c->last_progress = Clock::now();
        }
        flush(c);
    }

    // ---- accept ----
    void accept_all() {
        while (true) {
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) pause_accept();
                return;
            }
            if (static_cast<int>(conns.size()) >= o.max_conns) {  // no room even to answer
                count_refusal("max_conns");
                ::close(fd);
                continue;
            }
            add_conn(fd, ss);
        }
    }

    // Out of file descriptors: stop accepting for 100 ms instead of spinning on the backlog.
    void pause_accept() {
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
        accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
    }

    void resume_accept() {
        if (accept_paused_until == Clock::time_point{} || Clock::now() < accept_paused_until) return;
        accept_paused_until = {};
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.fd = listen_fd;
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &e);
    }

    void add_conn(int fd, const sockaddr_storage& ss) {
        auto c = std::make_shared<Conn>();
        c->fd = fd;
        address_of(ss, c->ip, c->port);
        sockaddr_storage local{};
        socklen_t len = sizeof local;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) address_of(local, c->local_ip, c->local_port);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->ready_at = Clock::now();
        c->events = kRead;
        epoll_event e{};
        e.events = c->events;
        e.data.fd = fd;
        epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &e);
        conns[fd] = c;
        open++;
        if (o.max_conns_per_client > 0 && per_client[c->ip] >= o.max_conns_per_client) {
            refuse(c, Refusal{429, "too many connections from " + c->ip + " (limit " + std::to_string(o.max_conns_per_client) +
                                       ", --max-conns-per-client)", "per_client"});
            return;
        }
        c->counted = true;
        per_client[c->ip]++;
    }

    // ---- reading ----
    void on_readable(const std::shared_ptr<Conn>& c) {
        char buf[64 * 1024];
        for (int reads = 0; reads < 16; ++reads) {   // at most 1 MiB per event, then parse (level-triggered: more comes)
            ssize_t n = ::recv(c->fd, buf, sizeof buf, 0);
            if (n > 0) {
                if (c->phase != Phase::Draining) c->in.append(buf, static_cast<size_t>(n));
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c->peer_eof = true;
            if (n < 0 && errno == EINTR) continue;
            break;
        }
        if (c->phase == Phase::Draining) {
            if (c->peer_eof) close_conn(c);
            return;
        }
        advance(c);
    }

    // Moves a connection through head -> body -> dispatch as far as the bytes in hand allow.
    void advance(const std::shared_ptr<Conn>& c) {
        try {
            if (c->phase == Phase::Head) read_head(*c);
            if (c->phase == Phase::Body && read_body(*c)) return start(c);
        } catch (const Refusal& r) {
            return refuse(c, r);
        }
        if (c->peer_eof) return close_conn(c);
        if (c->phase == Phase::Body && c->head.expect_continue) flush(c);   // the 100 Continue
    }

    void read_head(Conn& c) {
        size_t lead = c.in.find_first_not_of("\r\n");      // blank lines before a request are allowed
        if (lead == std::string::npos) {
            if (c.in.size() > 4) c.in.clear();
            return;
        }
        size_t end = c.in.find("\r\n\r\n", lead);
        if (end == std::string::npos || end - lead > o.max_header_bytes) {
            if (c.in.size() - lead > o.max_header_bytes)
                throw Refusal{431, "request headers exceed " + std::to_string(o.max_header_bytes) + " bytes", "header_too_large"};
            return;
        }
        c.head = parse_head(c.in.substr(lead, end - lead));
        c.in.erase(0, end + 4);
        if (!c.head.chunked && c.head.content_length > o.max_body_bytes)
            throw Refusal{413, "request body of " + std::to_string(c.head.content_length) + " bytes exceeds the limit of " +
                                   std::to_string(o.max_body_bytes) + " bytes (--max-body-bytes)", "too_large"};
        c.phase = Phase::Body;
        c.body.clear();
        c.chunks = ChunkedDecoder{};
        c.body_at = Clock::now();
        if (c.head.expect_continue && (c.head.chunked || c.head.content_length > 0)) {
            std::lock_guard<std::mutex> lk(c.mu);
            c.out += "HTTP/1.1 100 Continue\r\n\r\n";
        }
    }

    // True when the whole body is in c.body.
    bool read_body(Conn& c) {
        if (c.head.chunked) return c.chunks.feed(c.in, c.body, o.max_body_bytes);
        size_t n = std::min<uint64_t>(c.head.content_length - c.body.size(), c.in.size());
        c.body.append(c.in, 0, n);
        c.in.erase(0, n);
        return c.body.size() == c.head.content_length;
    }

    // ---- dispatch ----
    void start(const std::shared_ptr<Conn>& c) {
        std::string request = c->head.forward + "Content-Length: " + std::to_string(c->body.size()) + "\r\n\r\n";
        request += c->body;
        c->body.clear();
        c->body.shrink_to_fit();
        c->phase = Phase::Dispatched;
        {
            std::lock_guard<std::mutex> lk(c->mu);
            c->worker_done = false;
            c->close_after = false;
        }
        {
            std::lock_guard<std::mutex> lk(qmu);
            tasks.emplace_back(c, std::move(request));
        }
        qcv.notify_one();
        flush(c);   // a pending 100 Continue, and the interest set for the dispatched phase
    }

    void worker_loop() {
        while (true) {
            std::pair<std::shared_ptr<Conn>, std::string> task;
            {
                std::unique_lock<std::mutex> lk(qmu);
                qcv.wait(lk, [&] { return stopping || !tasks.empty(); });
                if (tasks.empty()) return;
                task = std::move(tasks.front());
                tasks.pop_front();
            }
            run_task(task.first, std::move(task.second));
        }
    }

    void run_task(const std::shared_ptr<Conn>& c, std::string request) {
        bool close = c->head.close || c->served + 1 >= o.keep_alive_max, closed = false, ok = false;
        {
            FrontStream strm(c, std::move(request), [this](const std::shared_ptr<Conn>& x) { wake(x); });
            try {
                ok = dispatch(strm, close, closed);
            } catch (const std::exception& e) {
                log::error(kComp, std::string("request failed: ") + e.what());
            }
        }
        {
            std::lock_guard<std::mutex> lk(c->mu);
            c->worker_done = true;
            c->close_after = close || closed || !ok;
        }
        wake(c);
    }

    // ---- writing ----
    // Sends what the connection has buffered; finishes the request when all is sent.
    void flush(const std::shared_ptr<Conn>& c) {
        bool done = false, close_after = false, gone = false, pending = false;
        {
            std::lock_guard<std::mutex> lk(c->mu);
            while (c->pending() > 0 && !c->peer_gone) {
                ssize_t n = ::send(c->fd, c->out.data() + c->out_off, c->pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                    c->out_off += static_cast<size_t>(n);
                    c->last_progress = Clock::now();
                } else if (n < 0 && errno == EINTR) {
                    continue;
                } else {
                    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) c->peer_gone = true;
                    break;
                }
            }
            if (c->pending() == 0 || c->peer_gone) {
                c->out.clear();
                c->out_off = 0;
            }
            pending = c->pending() > 0;
            gone = c->peer_gone;
            done = c->worker_done;
            close_after = c->close_after;
        }
        c->cv.notify_all();
        after_flush(c, pending, gone, done, close_after);
    }

    void after_flush(const std::shared_ptr<Conn>& c, bool pending, bool gone, bool done, bool close_after) {
        if (c->phase == Phase::Draining) {
            if (gone) return close_conn(c);
            if (!pending) ::shutdown(c->fd, SHUT_WR);
            return want(*c, pending ? kWrite : kRead);
        }
        if (c->phase != Phase::Dispatched) return want(*c, (pending ? kWrite : kNone) | kRead);
        if (!done) return want(*c, pending ? kWrite : kNone);       // the worker is still writing
        if (pending) return want(*c, kWrite);
        if (gone || close_after || c->peer_eof) return close_conn(c);
        c->served++;            // keep-alive: back to reading, pipelined bytes first
        c->phase = Phase::Head;
        c->ready_at = Clock::now();
        want(*c, kRead);
        advance(c);
    }

    // ---- deadlines (checked every 100 ms) ----
    void check_deadlines() {
        std::vector<std::shared_ptr<Conn>> all;
        all.reserve(conns.size());
        for (auto& kv : conns) all.push_back(kv.second);
        for (auto& c : all) check_deadline(c);
    }

    void check_deadline(const std::shared_ptr<Conn>& c) {
        const auto now = Clock::now();
        if (c->phase == Phase::Head) {
            const bool partial = c->in.find_first_not_of("\r\n") != std::string::npos;
            if (!partial && c->served > 0 && seconds_since(c->ready_at) > o.idle_timeout_s) return close_conn(c);
            if (seconds_since(c->ready_at) <= o.header_timeout_s) return;
            if (!partial) return close_conn(c);
            return refuse(c, Refusal{408, "request headers not received within " + fmt(o.header_timeout_s) + " s", "header_timeout"});
        }
        if (c->phase == Phase::Body) {
            double allowed = o.body_timeout_s + static_cast<double>(c->body.size()) / kMinBodyBytesPerSec;
            if (seconds_since(c->body_at) > allowed)
                refuse(c, Refusal{408, "request body not received in time (" + fmt(o.body_timeout_s) + " s + 1 s per 64 KiB received)", "body_timeout"});
            return;
        }
        if (c->phase == Phase::Draining && now > c->linger_until) return close_conn(c);
        bool stalled = false;
        {
            std::lock_guard<std::mutex> lk(c->mu);
            stalled = c->pending() > 0 && !c->peer_gone && seconds_since(c->last_progress) > o.write_timeout_s;
            if (stalled) c->peer_gone = true;
        }
        if (stalled) {
            count_refusal("write_timeout");
            log::debug(kComp, c->ip + ": response not read for " + fmt(o.write_timeout_s) + " s, abandoned");
            flush(c);
        }
    }

    static std::string fmt(double s) {
        std::ostringstream os;
        os << s;
        return os.str();
    }

    // ---- the loop ----
    void loop() {
        auto last_tick = Clock::now();
        std::vector<epoll_event> evs(256);
        while (!stopping) {
            int n = epoll_wait(epoll_fd, evs.data(), static_cast<int>(evs.size()), 100);
            for (int i = 0; i < n; ++i) on_event(evs[i]);
            if (seconds_since(last_tick) >= 0.1) {
                last_tick = Clock::now();
                resume_accept();
                check_deadlines();
            }
        }
    }

    void on_event(const epoll_event& e) {
        if (e.data.fd == listen_fd) return accept_all();
        if (e.data.fd == wake_fd) return on_wake();
        auto it = conns.find(e.data.fd);
        if (it == conns.end()) return;
        std::shared_ptr<Conn> c = it->second;
        if (e.events & (EPOLLERR | EPOLLHUP)) return close_conn(c);
        if (e.events & EPOLLOUT) flush(c);
        if (conns.count(e.data.fd) == 0 || conns[e.data.fd] != c) return;
        if (e.events & (EPOLLIN | EPOLLRDHUP)) {
            if (c->phase == Phase::Dispatched) return on_eof_while_dispatched(c);
            on_readable(c);
        }
    }

    // The client half-closed while its request runs: the answer is still written, then closed.
    void on_eof_while_dispatched(const std::shared_ptr<Conn>& c) {
        c->peer_eof = true;
        uint32_t ev = c->events & ~kRead;
        want(*c, ev);
    }

    void on_wake() {
        uint64_t v;
        ssize_t r = ::read(wake_fd, &v, sizeof v);
        (void)r;
        std::vector<std::shared_ptr<Conn>> list;
        {
            std::lock_guard<std::mutex> lk(qmu);
            list.swap(touched);
        }
        for (auto& c : list) {
            auto it = conns.find(c->fd);
            if (it != conns.end() && it->second == c) flush(c);
        }
    }
};

HttpFront::HttpFront(FrontOptions options, Dispatch dispatch)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(dispatch))) {}

HttpFront::~HttpFront() {
    stop();
    for (auto& t : impl_->workers)
        if (t.joinable()) t.join();
    for (auto& kv : impl_->conns) ::close(kv.first);
    for (int fd : {impl_->listen_fd, impl_->epoll_fd, impl_->wake_fd})
        if (fd >= 0) ::close(fd);
}

namespace {

// Lifts the soft open-file limit to the hard one; returns the limit now in force.
rlim_t raise_open_file_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 65536);
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

int bind_socket(const std::string& host, int port) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const std::string service = std::to_string(port);
    if (getaddrinfo(host.c_str(), service.c_str(), &hints, &res) != 0) return -1;
    int fd = -1;
    for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
            ::close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

}  // namespace

int HttpFront::bind() {
    auto& im = *impl_;
    const rlim_t files = raise_open_file_limit();
    im.o.max_conns = static_cast<int>(std::min<rlim_t>(static_cast<rlim_t>(im.o.max_conns), files > 128 ? files - 96 : 32));
    im.listen_fd = bind_socket(im.o.host, im.o.port);
    if (im.listen_fd < 0)
        throw IoError(ErrorInfo{}.at(im.o.host + ":" + std::to_string(im.o.port)).msg("cannot listen")
                          .hint("the port is taken or the address is not local; pick another --port"));
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(im.listen_fd, reinterpret_cast<sockaddr*>(&ss), &len);
    std::string ip;
    int port = 0;
    address_of(ss, ip, port);
    im.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    im.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    for (int fd : {im.listen_fd, im.wake_fd}) {
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.fd = fd;
        epoll_ctl(im.epoll_fd, EPOLL_CTL_ADD, fd, &e);
    }
    return port;
}

void HttpFront::run() {
    auto& im = *impl_;
    for (int i = 0; i < std::max(im.o.threads, 2); ++i) im.workers.emplace_back([&im] { im.worker_loop(); });
    im.loop();
    // Stopping: unblock writers, let workers finish what they run (the server has cancelled
    // its generations), then drop the connections.
    for (auto& kv : im.conns) {
        std::lock_guard<std::mutex> lk(kv.second->mu);
        kv.second->peer_gone = true;
        kv.second->cv.notify_all();
    }
    im.qcv.notify_all();
    for (auto& t : im.workers) t.join();
    im.workers.clear();
    for (auto& kv : im.conns) ::close(kv.first);
    im.conns.clear();
}

void HttpFront::stop() {
    impl_->stopping = true;
    impl_->qcv.notify_all();
    if (impl_->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t r = ::write(impl_->wake_fd, &one, sizeof one);
        (void)r;
    }
}

std::string HttpFront::metrics_text() const {
    std::ostringstream m;
    m << "# HELP pdsd_http_connections_open Client connections open now.\n# TYPE pdsd_http_connections_open gauge\n"
      << "pdsd_http_connections_open " << impl_->open.load() << "\n"
      << "# HELP pdsd_http_refused_total Requests and connections refused before routing, by reason.\n"
      << "# TYPE pdsd_http_refused_total counter\n";
    std::lock_guard<std::mutex> lk(impl_->mmu);
    for (auto& kv : impl_->refused) m << "pdsd_http_refused_total{reason=\"" << kv.first << "\"} " << kv.second << "\n";
    return m.str();
}

}  // namespace pdsd::serve
