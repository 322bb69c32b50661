#include "pdsd/core/file_util.h"

#include "pdsd/core/error.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pdsd {

namespace {
std::string errno_text() { return std::strerror(errno); }

struct FdCloser {
    int fd;
    ~FdCloser() { if (fd >= 0) ::close(fd); }
};
}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        throw IoError(ErrorInfo{path}.msg("cannot open file: " + errno_text())
                          .hint("check the path and that the file is readable"));
    }
    FdCloser closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw IoError(ErrorInfo{path}.msg("cannot stat file: " + errno_text()));
    if (S_ISDIR(st.st_mode)) throw IoError(ErrorInfo{path}.msg("is a folder, expected a file"));
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) throw IoError(ErrorInfo{path}.msg("cannot mmap file: " + errno_text()));
    data_ = static_cast<const uint8_t*>(p);
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
    other.data_ = nullptr;
    other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
    if (this != &other) {
        release();
        path_ = std::move(other.path_);
        data_ = other.data_;
        size_ = other.size_;
        other.data_ = nullptr;
        other.size_ = 0;
    }
    return *this;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw IoError(ErrorInfo{path}.msg("cannot open file: " + errno_text())
                          .hint("check the path and that the file is readable"));
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw IoError(ErrorInfo{path}.msg("read failed"));
    return bytes;
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
    namespace fs = std::filesystem;
    fs::path target(path_);
    fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::random_device rd;
    tmp_ = (dir / ("." + target.filename().string() + ".tmp" + std::to_string(rd() % 1000000))).string();
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        throw IoError(ErrorInfo{tmp_}.msg("cannot create temp file: " + errno_text())
                          .hint("does the output folder exist and is it writable?"));
    }
}

AtomicFileWriter::~AtomicFileWriter() {
    if (fd_ >= 0) {
        ::close(fd_);
        ::unlink(tmp_.c_str());
    }
}

void AtomicFileWriter::write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    size_t off = 0;
    while (off < n) {
        ssize_t k = ::write(fd_, p + off, n - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            throw IoError(ErrorInfo{path_}.msg("write failed: " + errno_text()).hint("is the disk full?"));
        }
        off += static_cast<size_t>(k);
    }
    written_ += n;
}

void AtomicFileWriter::commit() {
    if (::fsync(fd_) != 0) throw IoError(ErrorInfo{path_}.msg("fsync failed: " + errno_text()));
    ::close(fd_);
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
        std::string err = errno_text();
        ::unlink(tmp_.c_str());
        throw IoError(ErrorInfo{path_}.msg("cannot rename temp file into place: " + err));
    }
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
    AtomicFileWriter w(path);
    w.write(bytes);
    w.commit();
}

namespace {
struct EvpDeleter {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string to_hex(const unsigned char* d, unsigned n) {
    static const char* digits = "0123456789abcdef";
    std::string out(n * 2, '0');
    for (unsigned i = 0; i < n; ++i) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    return out;
}
}  // namespace

std::string sha256_hex(std::string_view bytes) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(bytes.data(), bytes.size(), md, &n, EVP_sha256(), nullptr);
    return to_hex(md, n);
}

std::string sha256_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw IoError(ErrorInfo{path}.msg("cannot open file: " + errno_text()));
    std::unique_ptr<EVP_MD_CTX, EvpDeleter> ctx(EVP_MD_CTX_new());
    EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
    std::vector<char> buf(1 << 20);  // 1 MiB chunks: hashing a multi-GB shard stays in bounded memory
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &n);
    return to_hex(md, n);
}

}  // namespace pdsd
