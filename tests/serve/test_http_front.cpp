// The public socket of pdsd serve against slow and hostile clients (src/serve/http_front.h),
// over raw TCP so the client can misbehave: 256 trickling connections while /health and a chat
// stream are measured, a 10 GB Content-Length, chunked bodies past the limit, the per-address
// connection cap, header/body deadlines, Expect: 100-continue, pipelining, ambiguous framing.
// Attack connections come from 127.0.0.2-127.0.0.9 (all of 127/8 is loopback on Linux), the
// measuring client from 127.0.0.1.
#include "serve_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>

using namespace pdsd;
using namespace pdsd::serve_test;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// A blocking TCP connection from `source` (an address of 127/8) to 127.0.0.1:port.
struct Raw {
    int fd = -1;
    Raw(int port, const std::string& source = "127.0.0.1") {
        fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in src{};
        src.sin_family = AF_INET;
        inet_pton(AF_INET, source.c_str(), &src.sin_addr);
        ::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src);
        sockaddr_in dst{};
        dst.sin_family = AF_INET;
        dst.sin_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
            ::close(fd);
            fd = -1;
        }
    }
    ~Raw() {
        if (fd >= 0) ::close(fd);
    }
    Raw(const Raw&) = delete;
    Raw(Raw&& o) noexcept : fd(o.fd) { o.fd = -1; }
    bool send(const std::string& s) const { return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()); }
    // Everything until the peer closes, `until` appears, or `timeout_s` passes.
    std::string read(double timeout_s, const std::string& until = "") const {
        std::string got;
        auto t0 = Clock::now();
        char buf[4096];
        while (since(t0) < timeout_s) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            got.append(buf, static_cast<size_t>(n));
            if (!until.empty() && got.find(until) != std::string::npos) break;
        }
        return got;
    }
};

int status_of(const std::string& response) {
    if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return -1;
    return std::stoi(response.substr(9, 3));
}

json json_body_of(const std::string& response) {
    size_t p = response.find("\r\n\r\n");
    return json::parse(p == std::string::npos ? "" : response.substr(p + 4), nullptr, false);
}

// Reads one complete response with a Content-Length body.
std::string read_response(const Raw& r, double timeout_s) {
    std::string got = r.read(timeout_s, "\r\n\r\n");
    size_t head = got.find("\r\n\r\n");
    if (head == std::string::npos) return got;
    std::string lower = got.substr(0, head);
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    size_t cl = lower.find("content-length: ");
    if (cl == std::string::npos) return got;
    size_t want = head + 4 + std::stoul(lower.substr(cl + 16));
    auto t0 = Clock::now();
    while (got.size() < want && since(t0) < timeout_s) {
        std::string more = r.read(0.2);
        if (more.empty()) break;
        got += more;
    }
    return got;
}

const std::string kHealth = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

}  // namespace

TEST(HttpFront, TricklingAndSilentClientsDoNotBlockHealthOrChat) {
    serve::ServeOptions o;
    o.threads = 8;   // fewer workers than attackers: each one held would show
    Running s(o);
    // 256 attackers from four addresses (64 each, under the per-address cap): half trickle a
    // header byte every 100 ms, half announce a 1 MB body and never send it.
    std::vector<Raw> attack;
    for (int i = 0; i < 256; ++i) {
        attack.emplace_back(s.port, "127.0.0." + std::to_string(2 + i % 4));
        ASSERT_GE(attack.back().fd, 0) << "connect " << i;
        attack.back().send(i % 2 ? "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n{"
                                 : "POST /v1/chat/completions HTTP/1.1\r\nX-Slow: ");
    }
    std::atomic<bool> attacking{true};
    std::thread trickle([&] {
        while (attacking) {
            for (size_t i = 0; i < attack.size(); i += 2) attack[i].send("a");
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    // A chat stream and 100 /health probes during the attack.
    std::string stream_body;
    std::thread chat([&] {
        auto c = s.client();
        auto r = post_json(c, "/v1/chat/completions", chat_body("你好", 16, true));
        if (r && r->status == 200) stream_body = r->body;
    });
    std::vector<double> lat;
    auto c = s.client();
    for (int i = 0; i < 100; ++i) {
        auto t0 = Clock::now();
        auto r = c.Get("/health");
        lat.push_back(since(t0));
        ASSERT_TRUE(r) << "probe " << i;
        EXPECT_EQ(r->status, 200);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    chat.join();
    attacking = false;
    trickle.join();
    std::sort(lat.begin(), lat.end());
    EXPECT_LT(lat[98], 1.0) << "p99 /health during the attack";
    std::printf("[ attack ] 256 slow connections: /health p50 %.4f s, p99 %.4f s, max %.4f s\n", lat[50], lat[98], lat.back());
    auto frames = sse_data(stream_body);
    ASSERT_FALSE(frames.empty()) << "the chat stream did not complete during the attack";
    EXPECT_EQ(frames.back(), "[DONE]");
    auto m = c.Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("pdsd_http_connections_open "), std::string::npos);
    attack.clear();
    expect_alive(s);
}

TEST(HttpFront, HeaderAndBodyDeadlinesAre408) {
    serve::ServeOptions o;
    o.header_timeout_s = 1;
    o.body_timeout_s = 1;
    Running s(o, false);
    Raw head(s.port), body(s.port);
    head.send("GET /health HTTP/1.1\r\nHost");
    body.send("POST /knowledge_base/create_knowledge_base HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"knowledge_base_name\"");
    auto t0 = Clock::now();
    // A byte every 200 ms does not extend the header deadline.
    std::string got;
    while (since(t0) < 4 && got.empty()) {
        head.send("x");
        got = head.read(0.2);
    }
    EXPECT_EQ(status_of(got), 408) << got;
    EXPECT_LT(since(t0), 2.5);
    std::string b = read_response(body, 3);
    EXPECT_EQ(status_of(b), 408) << b;
    EXPECT_TRUE(json_body_of(b).contains("error")) << b;
    expect_alive(s);
}

TEST(HttpFront, HugeContentLengthIs413AtOnce) {
    Running s({}, false);
    Raw r(s.port);
    auto t0 = Clock::now();
    r.send("POST /knowledge_base/upload_docs HTTP/1.1\r\nHost: t\r\nContent-Length: 10737418240\r\n"
           "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n");
    std::string got = read_response(r, 5);
    EXPECT_LT(since(t0), 1.0);
    EXPECT_EQ(status_of(got), 413) << got;
    json j = json_body_of(got);
    ASSERT_TRUE(j.contains("error")) << got;
    EXPECT_EQ(j["error"]["type"], "request_too_large");
    expect_alive(s);
}

TEST(HttpFront, ChunkedBodiesHonourTheLimit) {
    serve::ServeOptions o;
    o.max_upload_bytes = 64 * 1024;
    Running s(o, false);
    auto c = s.client();
    // Within the limit: a chunked JSON body is decoded and routed.
    std::string create = json{{"knowledge_base_name", "kb"}}.dump();
    auto r = c.Post("/knowledge_base/create_knowledge_base",
                    [&](size_t, httplib::DataSink& sink) {
                        sink.write(create.data(), 10);
                        sink.write(create.data() + 10, create.size() - 10);
                        sink.done();
                        return true;
                    },
                    "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
    // Past it: 413 as soon as the decoded size passes 64 KiB, nothing stored.
    Raw raw(s.port);
    raw.send("POST /knowledge_base/upload_docs HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
             "Content-Type: multipart/form-data; boundary=x\r\n\r\n");
    std::string part = "--x\r\nContent-Disposition: form-data; name=\"knowledge_base_name\"\r\n\r\nkb\r\n"
                       "--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n\r\n";
    std::string chunk(16 * 1024, 'y');
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", part.size());
    raw.send(size_line + part + "\r\n");
    std::string got;
    for (int i = 0; i < 64 && got.empty(); ++i) {
        std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
        if (!raw.send(size_line + chunk + "\r\n")) break;
        got = raw.read(0.05);
    }
    if (got.empty()) got = read_response(raw, 2);
    EXPECT_EQ(status_of(got), 413) << got;
    EXPECT_FALSE(fs::exists(fs::path(s.root.str()) / "knowledge_base" / "kb" / "content" / "big.txt"));
    // A chunk size that overflows, and one that lies about its data.
    for (std::string bad : {"ffffffffffffffffff\r\n", "3\r\nabcdef\r\n0\r\n\r\n"}) {
        Raw b(s.port);
        b.send("POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + bad);
        std::string resp = read_response(b, 2);
        EXPECT_EQ(status_of(resp), 400) << bad << ": " << resp;
    }
    expect_alive(s);
}

TEST(HttpFront, ConnectionsPerClientAreCapped) {
    serve::ServeOptions o;
    o.max_conns_per_client = 4;
    Running s(o, false);
    std::vector<Raw> held;
    for (int i = 0; i < 4; ++i) held.emplace_back(s.port, "127.0.0.7");
    for (auto& h : held) {   // each one is served (and stays open: keep-alive)
        h.send(kHealth);
        EXPECT_EQ(status_of(read_response(h, 2)), 200);
    }
    Raw fifth(s.port, "127.0.0.7");
    std::string got = read_response(fifth, 2);
    EXPECT_EQ(status_of(got), 429) << got;
    EXPECT_NE(json_body_of(got)["error"]["message"].get<std::string>().find("--max-conns-per-client"), std::string::npos);
    Raw other(s.port, "127.0.0.8");   // another address is not affected
    other.send(kHealth);
    EXPECT_EQ(status_of(read_response(other, 2)), 200);
    held.pop_back();                  // a slot freed is usable again
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Raw again(s.port, "127.0.0.7");
    again.send(kHealth);
    EXPECT_EQ(status_of(read_response(again, 2)), 200);
}

TEST(HttpFront, ExpectContinuePipeliningAndKeepAlive) {
    Running s({}, false);
    Raw r(s.port);
    std::string body = json{{"knowledge_base_name", "kb2"}}.dump();
    r.send("POST /knowledge_base/create_knowledge_base HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
           "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
    std::string cont = r.read(2, "\r\n\r\n");
    EXPECT_EQ(cont, "HTTP/1.1 100 Continue\r\n\r\n");
    r.send(body);
    std::string first = read_response(r, 5);
    EXPECT_EQ(status_of(first), 200) << first;
    // Two requests in one write: two answers, in order, on the same connection.
    r.send(kHealth + "GET /v1/nope HTTP/1.1\r\nHost: t\r\n\r\n");
    // Both answers may come in one read: collect until the second status line is in.
    std::string both = r.read(3, "HTTP/1.1 404");
    both += r.read(0.3);
    EXPECT_EQ(status_of(both), 200) << both;
    size_t second = both.find("HTTP/1.1 ", 1);
    ASSERT_NE(second, std::string::npos) << both;
    EXPECT_EQ(status_of(both.substr(second)), 404) << both;
}

TEST(HttpFront, AmbiguousOrOversizedHeadsAreRefused) {
    Running s({}, false);
    struct Case {
        std::string request;
        int status;
    };
    std::vector<Case> cases = {
        {"POST /v1/embeddings HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST /v1/embeddings HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"POST /v1/embeddings HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"GET /health HTTP/1.1\r\nHost : t\r\n\r\n", 400},
        {"GET /health\r\n\r\n", 400},
        {"GET /health HTTP/1.1\r\nX: " + std::string(70 * 1024, 'a') + "\r\n\r\n", 431},
    };
    for (auto& k : cases) {
        Raw r(s.port);
        r.send(k.request);
        std::string got = read_response(r, 2);
        EXPECT_EQ(status_of(got), k.status) << k.request.substr(0, 80) << " -> " << got.substr(0, 200);
    }
    expect_alive(s);
}
